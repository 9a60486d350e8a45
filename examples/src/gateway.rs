//! The ingress gateway: global and per-client limits (the tower layer, embedded), the anomaly
//! controller watching its decisions, a live `/status` page, and every admitted request forwarded
//! to the egress gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;
use ratelimit_anomaly::tower::{AnomalyTask, TowerActuator, TowerObserver, newcomer_rules, spawn};
use ratelimit_anomaly::{Controller, ControllerConfig, Dimension, Monitor};
use ratelimit_core::{FailurePolicy, Limiter, MemoryStore, Policy, PolicyError};
use ratelimit_tower::{
    ConfigError, ControlError, ForwardedHeader, IpPrefixes, KeyExtractor, RateLimitHandle,
    RateLimitLayer, Rule, TrustedProxies,
};

use crate::proxy::{HttpClient, client, forward};
use crate::rls_store::RlsStore;
use crate::status::{LayerCounters, LimitedKeys, LimitedKeysObserver, StatusBoard, routes};

/// The gateway's limits and its anomaly controller.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Requests a second per client address.
    pub per_client: u32,
    /// Requests a second for everyone together.
    pub global: u32,
    /// Proxies whose forwarding header is believed (the client is the rightmost other address).
    pub trusted_proxies: Vec<String>,
    /// The one forwarding header those proxies set; every other one is ignored.
    pub forwarded_header: ForwardedHeader,
    /// How much of an address is one client (IPv6 by /64 by default).
    pub prefixes: IpPrefixes,
    /// The anomaly controller.
    pub anomaly: ControllerConfig,
    /// Whether to limit at all (false: the same proxy with no limiter, for comparison).
    pub limited: bool,
    /// Ask a rate limit service instead of deciding here: its gRPC URL and the domain to ask in.
    /// Each request is described by `remote_address` and `path`; an unreachable service lets
    /// requests through (as Envoy's `failure_mode_deny: false` does).
    pub remote: Option<(String, String)>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            per_client: 20,
            global: 1_000,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1/128".into()],
            forwarded_header: ForwardedHeader::default(),
            prefixes: IpPrefixes::default(),
            anomaly: ControllerConfig::default(),
            limited: true,
            remote: None,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A limit is not a valid policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The layer could not be built.
    #[error(transparent)]
    Layer(#[from] ConfigError),
    /// The anomaly actuator could not find its rule.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A trusted proxy is not a network.
    #[error("trusted proxy: {0}")]
    Proxy(#[from] ipnet::AddrParseError),
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The rate limit service's address is not a URL.
    #[error("rate limit service address: {0}")]
    Remote(String),
}

/// The layer that asks a rate limit service: each request is described by `remote_address` (the
/// client, keyed as the embedded limits key it) and `path`, and the service's configuration
/// decides. An unreachable service lets requests through, as Envoy's `failure_mode_deny: false`
/// does.
fn remote_layer(
    url: &str,
    domain: &str,
    trusted: &TrustedProxies,
    per_client: u32,
) -> Result<RateLimitLayer, GatewayError> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| GatewayError::Remote(e.to_string()))?
        .timeout(Duration::from_secs(1))
        .connect_lazy();
    let limiter = Limiter::new(RlsStore::new(channel, domain))
        .with_failure_policy(FailurePolicy::Open)
        // Generous: a loopback call on a busy machine can take tens of milliseconds, and a call
        // past the deadline is answered by the failure policy (admitted).
        .with_deadline(Duration::from_secs(1));
    // The service's configuration gives the limits; these policies only label the responses.
    let label = Policy::per_second(per_client)?;
    Ok(RateLimitLayer::builder(Arc::new(limiter))
        .rule(Rule::new(
            "remote_address",
            KeyExtractor::ClientIp(trusted.clone()),
            label,
        ))
        .rule(Rule::new("path", KeyExtractor::Route, label))
        .build()?)
}

/// A running gateway.
pub struct Gateway {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its limits, changeable at runtime.
    pub handle: RateLimitHandle,
    /// The anomaly controller's task.
    pub anomaly: Arc<AnomalyTask>,
    /// What `/status` and `/status.json` show.
    pub status: Arc<StatusBoard>,
}

#[derive(Clone)]
struct Upstream {
    client: HttpClient,
    egress: String,
}

async fn proxy(State(upstream): State<Upstream>, request: Request<Body>) -> Response<Body> {
    forward(
        &upstream.client,
        &upstream.egress,
        request,
        Duration::from_secs(10),
    )
    .await
}

/// Starts the gateway on `listen` (port 0: any), forwarding to `egress`.
pub async fn start(
    listen: SocketAddr,
    egress: SocketAddr,
    config: GatewayConfig,
) -> Result<Gateway, GatewayError> {
    let monitor = Arc::new(Monitor::default());
    let limiter = Arc::new(Limiter::new(MemoryStore::new()));
    let trusted = TrustedProxies::parse(config.trusted_proxies.iter().map(String::as_str))?
        .with_header(config.forwarded_header.clone())
        .with_prefixes(config.prefixes);
    // Clients the monitor has not seen before an anomaly share one budget while the controller
    // asks for it (persistent ones another); otherwise the rules let everything through unlooked
    // at.
    let newcomers = newcomer_rules(
        monitor.clone(),
        trusted.clone(),
        "newcomers",
        "persistent-newcomers",
    )?;
    // The status page's most limited keys, recorded by the layer's observer.
    let limited_keys = Arc::new(LimitedKeys::default());
    let layer = RateLimitLayer::builder(limiter.clone())
        .rule(
            Rule::new(
                "per-client",
                KeyExtractor::ClientIp(trusted.clone()),
                Policy::per_second(config.per_client)?,
            )
            // Asking a rate limit service, the service limits each client; this rule then only
            // shows the observers (the anomaly controller) who each client is.
            .shadow(config.remote.is_some()),
        )
        .rule(newcomers.newcomers)
        .rule(newcomers.persistent)
        .rule(newcomers.by_network)
        .rule(Rule::new(
            "global",
            KeyExtractor::Global,
            Policy::per_second(config.global)?,
        ))
        .observer(Arc::new(TowerObserver::new(
            monitor.clone(),
            "per-client",
            Dimension::Client,
        )))
        .observer(Arc::new(LimitedKeysObserver::new(limited_keys.clone())))
        .build()?;
    let handle = layer.handle();
    let tick = config.anomaly.tick;
    let anomaly = Arc::new(spawn(
        monitor,
        Controller::new(config.anomaly),
        TowerActuator::new(handle.clone(), "global")?.with_newcomer_rules(newcomers.gate, tick)?,
        tick,
    ));
    let upstream = Upstream {
        client: client(),
        egress: format!("http://{egress}"),
    };
    let proxied = Router::new().fallback(proxy).with_state(upstream);
    let limited = match (&config.remote, config.limited) {
        (_, false) => proxied,
        (None, true) => proxied.layer(layer),
        // The service's limits in a layer of their own inside this one: the gateway's layer,
        // its observers and the anomaly controller see every request, the service's refusals
        // included, as when it decides itself.
        (Some((url, domain)), true) => proxied
            .layer(remote_layer(url, domain, &trusted, config.per_client)?)
            .layer(layer),
    };
    // Every request the layer decides goes under `global`: its counters are the layer's
    // decisions (see `LayerCounters`), whether the per-client limits are this process's or a
    // rate limit service's (whose refusals pass back through this layer). Not limiting leaves
    // them at zero, and the page says so.
    let store_kind = match (&config.remote, config.limited) {
        (_, false) => "none: limiting is off",
        (Some(_), true) => {
            "memory for the global and newcomers' limits; the rate limit service for each client's"
        }
        (None, true) => "memory (in this process)",
    };
    let board = StatusBoard::new(
        "ratelimit gateway",
        LayerCounters::new(handle.clone(), "global"),
        limiter,
        store_kind,
    )
    .with_limited_keys(limited_keys)
    .with_anomaly(anomaly.clone(), tick)
    .start();
    let metrics_handle = handle.clone();
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    let app = routes(board.clone())
        .route(
            "/metrics",
            get(move || {
                // The layer's counters through the metrics facade into this gateway's own
                // Prometheus recorder (not the process-wide one: several gateways can share a
                // process, as in the tests), rendered by metrics-exporter-prometheus as the
                // service's metrics are.
                metrics::with_local_recorder(&recorder, || metrics_handle.record_metrics());
                let text = recorder.handle().render();
                async move { text }
            }),
        )
        .merge(limited);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service).await {
            tracing::error!(%error, "gateway stopped");
        }
    });
    Ok(Gateway {
        address,
        handle,
        anomaly,
        status: board,
    })
}
