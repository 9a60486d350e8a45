//! The ingress gateway: global and per-client limits (the tower layer, embedded), the anomaly
//! controller watching its decisions, a live `/status` page, and every admitted request forwarded
//! to the egress gateway.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response};
use axum::response::Html;
use axum::routing::get;
use ratelimit_anomaly::tower::{AnomalyTask, TowerActuator, TowerObserver, newcomer_rules, spawn};
use ratelimit_anomaly::{Controller, ControllerConfig, Dimension, Monitor};
use ratelimit_core::{Limiter, MemoryStore, Policy, PolicyError};
use ratelimit_tower::{
    ConfigError, ControlError, ForwardedHeader, IpPrefixes, KeyExtractor, RateLimitHandle,
    RateLimitLayer, RequestView, Rule, TrustedProxies,
};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;

use crate::proxy::{HttpClient, client, forward};

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

#[derive(Clone)]
struct Remote {
    client: RateLimitServiceClient<tonic::transport::Channel>,
    domain: String,
    // The same extractor the embedded limits use, so that both modes key a client alike.
    trusted: TrustedProxies,
}

/// Asks the rate limit service about the request; 429 with `Retry-After` when it is over limit.
async fn ask_remote(
    State(remote): State<Remote>,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;

    let entry = |key: &str, value: String| RateLimitDescriptor {
        entries: vec![Entry {
            key: key.to_string(),
            value,
        }],
        ..RateLimitDescriptor::default()
    };
    // Without a peer address (never under axum::serve with connect info) every request shares one
    // descriptor value rather than escaping the limit.
    let client_key = remote
        .trusted
        .client_key(&RequestView::of(&request))
        .unwrap_or_else(|_| "unknown".to_string());
    let question = RateLimitRequest {
        domain: remote.domain.clone(),
        descriptors: vec![
            entry("remote_address", client_key),
            entry("path", request.uri().path().to_string()),
        ],
        hits_addend: 0,
    };
    let mut client = remote.client.clone();
    match client.should_rate_limit(question).await {
        Ok(answer) if answer.get_ref().overall_code == Code::OverLimit as i32 => {
            let wait = answer
                .get_ref()
                .statuses
                .iter()
                .filter(|s| s.code == Code::OverLimit as i32)
                .filter_map(|s| s.duration_until_reset)
                .map(|d| d.seconds + i64::from(d.nanos > 0))
                .max()
                .unwrap_or(1)
                .max(1);
            let mut response = Response::new(Body::from("rate limited"));
            *response.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
            if let Ok(value) = axum::http::HeaderValue::from_str(&wait.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
        Ok(_) => next.run(request).await,
        Err(status) => {
            tracing::warn!(%status, "rate limit service unavailable; letting the request through");
            next.run(request).await
        }
    }
}

/// A running gateway.
pub struct Gateway {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its limits, changeable at runtime.
    pub handle: RateLimitHandle,
    /// The anomaly controller's task.
    pub anomaly: Arc<AnomalyTask>,
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
    let (newcomers, persistent, gate) = newcomer_rules(
        monitor.clone(),
        trusted.clone(),
        "newcomers",
        "persistent-newcomers",
    )?;
    let layer = RateLimitLayer::builder(limiter.clone())
        .rule(Rule::new(
            "per-client",
            KeyExtractor::ClientIp(trusted.clone()),
            Policy::per_second(config.per_client)?,
        ))
        .rule(newcomers)
        .rule(persistent)
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
        .build()?;
    let handle = layer.handle();
    let tick = config.anomaly.tick;
    let anomaly = Arc::new(spawn(
        monitor,
        Controller::new(config.anomaly),
        TowerActuator::new(handle.clone(), "global")?.with_newcomer_rules(
            "newcomers",
            "persistent-newcomers",
            gate,
            tick,
        )?,
        tick,
    ));
    let upstream = Upstream {
        client: client(),
        egress: format!("http://{egress}"),
    };
    let proxied = Router::new().fallback(proxy).with_state(upstream);
    let limited = match (&config.remote, config.limited) {
        (_, false) => proxied,
        (Some((url, domain)), true) => {
            let remote = Remote {
                client: RateLimitServiceClient::new(
                    tonic::transport::Endpoint::from_shared(url.clone())
                        .map_err(|e| GatewayError::Remote(e.to_string()))?
                        .timeout(Duration::from_millis(200))
                        .connect_lazy(),
                ),
                domain: domain.clone(),
                trusted,
            };
            proxied.layer(axum::middleware::from_fn_with_state(remote, ask_remote))
        }
        (None, true) => proxied.layer(layer),
    };
    let (status_handle, status_anomaly) = (handle.clone(), anomaly.clone());
    let metrics_handle = handle.clone();
    let app = Router::new()
        .route(
            "/status",
            get(move || {
                let page = status_page(
                    &status_handle,
                    &status_anomaly,
                    limiter.store_healthy(),
                    tick,
                );
                async move { Html(page) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics_handle.render_prometheus();
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
    })
}

/// The live status page: refreshed every two seconds.
fn status_page(
    handle: &RateLimitHandle,
    anomaly: &AnomalyTask,
    store_healthy: bool,
    tick: Duration,
) -> String {
    let status = anomaly.status();
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>ratelimit gateway</title><style>body{font-family:sans-serif;margin:2em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>\
         </head><body><h1>ratelimit gateway</h1>",
    );
    let _ = write!(
        page,
        "<p>Decisions in the last second: <b>{}</b> ({} limited). Store: <b>{}</b>. \
         Anomaly state: <b>{:?}</b>, global limit at <b>{:.0}%</b>, score {:.2}.</p>",
        status.requests,
        status.limited,
        if store_healthy {
            "healthy"
        } else {
            "unavailable"
        },
        status.state,
        status.factor * 100.0,
        status.score
    );
    page.push_str("<h2>Rules</h2><table><tr><th>rule</th><th>admitted</th><th>limited</th><th>blocked</th></tr>");
    for rule in handle.rules() {
        if let Ok(counters) = handle.counters(rule) {
            let snapshot = counters.snapshot();
            let get = |name: &str| {
                snapshot
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, v)| *v)
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(rule),
                get("admitted"),
                get("limited"),
                get("blocked")
            );
        }
    }
    page.push_str("</table><h2>Busiest clients (last second)</h2><table><tr><th>client</th><th>requests</th></tr>");
    for (client, count) in &status.top_clients {
        let _ = write!(page, "<tr><td>{}</td><td>{count}</td></tr>", escape(client));
    }
    match status.newcomer_budget {
        Some((fresh, persistent)) => {
            let _ = write!(
                page,
                "<p>Newcomers' budget: <b>{fresh}</b> requests a tick (persistent newcomers \
                 <b>{persistent}</b>); established clients keep their limits.</p>"
            );
        }
        None => page.push_str("<p>Newcomers' budget: none.</p>"),
    }
    // Every action explained: which cohort, which signal and its evidence, what was done, until
    // when (the same explanation the decision stream and the log carry).
    page.push_str(
        "</table><h2>Anomaly actions</h2><table><tr><th>decided</th><th>cohort</th>\
         <th>signal</th><th>action</th><th>applied</th><th>until</th><th>explanation</th></tr>",
    );
    for explained in status.recent.iter().rev() {
        let action = &explained.decided.action;
        let reason = action.reason();
        let decided = humantime(explained.at);
        let until = match explained.until() {
            Some(at) => humantime(at),
            None => reason.until.describe(tick),
        };
        let _ = write!(
            page,
            "<tr><td>{decided}</td><td>{}</td><td>{:?}: observed {:.0} against {:.1} (score {:.2})\
             </td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&reason.cohort.to_string()),
            reason.signal,
            reason.observed,
            reason.baseline,
            reason.score,
            escape(&action.what()),
            explained.decided.apply,
            escape(&until),
            escape(&explained.text)
        );
    }
    page.push_str("</table></body></html>");
    page
}

/// A wall-clock time as seconds since the Unix epoch, UTC (no calendar crate for a status page).
fn humantime(at: std::time::SystemTime) -> String {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or_else(|_| "-".to_string(), |d| format!("{}s UTC", d.as_secs()))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
