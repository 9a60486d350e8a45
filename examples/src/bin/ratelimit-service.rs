//! `ratelimit-service`: Envoy's rate limit service (gRPC `ShouldRateLimit`), a drop-in
//! replacement for envoyproxy/ratelimit. It reads the same descriptor YAML and the same
//! environment variables (see [`settings`](ratelimit_examples::envoy::settings)), listens on the
//! same ports (gRPC 8081, HTTP 8080 with `/healthcheck` and `/json`, debug 6070 with
//! `/rlconfig`), and counts in the memory store, Redis (single, Cluster, Sentinel) or DynamoDB.
//!
//! ```sh
//! ratelimit-service --config config/ratelimit.yaml      # serve, flags
//! RUNTIME_ROOT=/data RUNTIME_SUBDIRECTORY=ratelimit ratelimit-service   # serve, as a Deployment
//! ratelimit-service check config/                        # validate, print every limit
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_service_server::RateLimitQuotaServiceServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use metrics_exporter_prometheus::PrometheusHandle;
use ratelimit_anomaly::tower::spawn;
use ratelimit_anomaly::{Action, Actuator, Controller, ControllerConfig, Monitor};
use ratelimit_core::{FailurePolicy, Limiter, Membership, MemoryStore, Store};
use ratelimit_examples::envoy::backend;
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::http::{Health, debug_routes, routes};
use ratelimit_examples::envoy::metrics;
use ratelimit_examples::envoy::quota::QuotaServer;
use ratelimit_examples::envoy::reload::Reloader;
use ratelimit_examples::envoy::service::RateLimitServer;
use ratelimit_examples::envoy::settings::{Anomaly, Backend, Cli, Command, Failure, Settings};
use ratelimit_examples::envoy::telemetry;
use ratelimit_examples::status::{ServiceCounters, StatusBoard};

type Error = Box<dyn std::error::Error>;

/// The anomaly controller's tick.
const ANOMALY_TICK: Duration = Duration::from_secs(1);

/// What the store is, for the status page: never its address, which may hold a password.
fn store_kind(backend: &Backend) -> &'static str {
    match backend {
        Backend::Memory => "memory (in this process)",
        Backend::Redis(_) => "Redis",
        Backend::RedisCluster(_) => "Redis Cluster",
        Backend::RedisSentinel { .. } => "Redis through Sentinel",
        Backend::Dynamodb(_) => "DynamoDB",
    }
}

/// The service's limits are its configuration's: anomaly actions are reported, not applied.
struct ReportOnly;

impl Actuator for ReportOnly {
    fn apply(&self, _action: &Action) {}
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check { path }) => check(&path),
        None => serve(cli),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The error's message (file, line, field), not its Debug form.
            eprintln!("ratelimit-service: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `check PATH`: the configuration as the service would load it (`MERGE_DOMAIN_CONFIG` and
/// `RUNTIME_IGNOREDOTFILES` read as when serving), every limit printed, or the first error.
fn check(path: &Path) -> Result<(), Error> {
    let ignore_dotfiles = Settings::from_env(Default::default())
        .map(|s| s.config.ignore_dotfiles)
        .unwrap_or(false);
    let texts = Config::read_with(path, ignore_dotfiles)?;
    let config = Config::from_texts(&texts)?;
    // The memory store counts every limit the descriptor YAML can state.
    config.check(&MemoryStore::new())?;
    let mut domains: Vec<&str> = config.domains().collect();
    domains.sort_unstable();
    println!(
        "{}: {} file(s), domain(s) {}: valid",
        path.display(),
        texts.len(),
        domains.join(", ")
    );
    print!("{}", config.dump());
    Ok(())
}

fn serve(cli: Cli) -> Result<(), Error> {
    let settings = Settings::from_env(cli.flags)?;
    // Before anything records: what is recorded without a recorder is lost.
    let prometheus = metrics::install()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // In the runtime: the span exporter runs on it.
        let telemetry = telemetry::init(
            &settings.log_filter,
            settings.log_json,
            settings.tracing.as_ref(),
        )?;
        for note in &settings.notes {
            tracing::info!("{note}");
        }
        let served = run(settings, prometheus).await;
        telemetry.shutdown();
        served
    })
}

/// A limiter over `store` with the settings' failure policy, replicas and over-limit cache.
fn build_limiter(
    store: Arc<dyn Store>,
    settings: &Settings,
    members: Option<&Membership>,
) -> Arc<Limiter> {
    let failure = match settings.failure {
        Failure::Open => FailurePolicy::Open,
        Failure::Closed => FailurePolicy::Closed,
        Failure::Local => FailurePolicy::LocalFallback,
    };
    let mut limiter = Limiter::from_arc(store)
        .with_failure_policy(failure)
        .with_replicas(settings.replicas);
    // LOCAL_CACHE_SIZE_IN_BYTES unset (0) keeps the limiter's own over-limit cache.
    if settings.over_limit_cache_keys > 0 {
        limiter = limiter.with_over_limit_cache(settings.over_limit_cache_keys);
    }
    if let Some(members) = members {
        limiter = limiter.with_membership(members);
    }
    Arc::new(limiter)
}

async fn run(settings: Settings, prometheus: PrometheusHandle) -> Result<(), Error> {
    let texts = Config::read_with(&settings.config.path, settings.config.ignore_dotfiles)?;
    let config = Config::from_texts(&texts)?;
    let prefix = settings.key_prefix.as_deref();
    let store = backend::connect(&settings.backend, prefix).await?;
    // Held for the life of the process: dropping it stops the heartbeat.
    let members = match settings.membership {
        Some(period) => Some(Membership::join(store.clone(), "ratelimit-service", period).await?),
        None => None,
    };
    let limiter = build_limiter(store, &settings, members.as_ref());
    let monitor = (settings.anomaly == Anomaly::Shadow).then(|| Arc::new(Monitor::default()));
    // A limit the store cannot count is refused here, once, rather than on every request.
    let mut server = RateLimitServer::try_new(config, limiter.clone())?
        .with_global_shadow_mode(settings.shadow_mode)
        .with_global_quota_mode(settings.quota_mode)
        .with_near_limit_ratio(settings.near_limit_ratio);
    if let Some(per_second) = &settings.per_second {
        let store = backend::connect(per_second, prefix).await?;
        server.config_handle().read().check(store.as_ref())?;
        server = server.with_per_second(build_limiter(store, &settings, members.as_ref()));
    }
    if let Some(names) = &settings.response_headers {
        server = server.with_response_headers(names.clone());
    }
    if let Some(monitor) = &monitor {
        server = server.with_monitor(monitor.clone());
    }
    let anomaly = monitor.map(|monitor| {
        let controller = Controller::new(ControllerConfig {
            shadow: true,
            ..ControllerConfig::default()
        });
        Arc::new(spawn(monitor, controller, ReportOnly, ANOMALY_TICK))
    });
    if settings.reload_ms == 0 {
        tracing::info!("reloading is off (--reload-ms 0)");
    } else {
        let reloader = Reloader::new(
            settings.config.path.clone(),
            Duration::from_millis(settings.reload_ms),
        )?
        .settle(Duration::from_millis(settings.reload_settle_ms))
        .watch_root(settings.config.watch.clone())
        .ignore_dotfiles(settings.config.ignore_dotfiles)
        .checked_for(limiter.store().clone())
        .loaded(texts);
        // Runs until the process ends.
        drop(reloader.spawn(server.config_handle())?);
    }
    let server = Arc::new(server);
    let health = Arc::new(Health::new(settings.healthy_needs_config));
    let metrics_page = {
        let limiter = limiter.clone();
        move || {
            metrics::record_replicas(limiter.replicas());
            let text = metrics::render(&prometheus, limiter.store_healthy());
            async move { text }
        }
    };
    let mut board = StatusBoard::new(
        "ratelimit-service",
        ServiceCounters::new(server.metrics(), server.config_handle()),
        limiter.clone(),
        store_kind(&settings.backend),
    )
    .with_limited_keys(server.limited_keys());
    if let Some(task) = anomaly {
        board = board.with_anomaly(task, ANOMALY_TICK);
    }
    let http = routes(server.clone(), health.clone())
        .route("/metrics", get(metrics_page.clone()))
        .merge(ratelimit_examples::status::routes(board.start()));
    serve_http(settings.http, http, "HTTP").await?;
    serve_http(
        settings.debug,
        debug_routes(server.config_handle()),
        "debug",
    )
    .await?;
    // USE_PROMETHEUS: the same text on a port of its own, as envoyproxy/ratelimit serves it.
    if let Some((address, path)) = &settings.prometheus {
        let router = Router::new().route(path, get(metrics_page));
        serve_http(*address, router, "Prometheus").await?;
    }
    // RLQS on the same port: the same configuration (reloads apply to both), shares split over
    // the same replica count as the failure policy's.
    let quota = QuotaServer::new(server.config_handle(), settings.replicas)
        .with_replica_count({
            let limiter = limiter.clone();
            move || limiter.replicas()
        })
        .with_store(limiter.clone());
    let incoming = tonic::transport::server::TcpIncoming::bind(settings.grpc)?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<RateLimitServiceServer<RateLimitServer>>()
        .await;
    reporter
        .set_serving::<RateLimitQuotaServiceServer<QuotaServer>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tracing::info!(grpc = %settings.grpc, http = %settings.http, debug = %settings.debug, "ratelimit-service listening");
    health.set_ready();
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(RateLimitServiceServer::from_arc(server))
        .add_service(quota.into_service())
        .serve_with_incoming_shutdown(incoming, async move {
            stopped().await;
            // Fail the health checks first, so that load balancers stop sending requests.
            health.set_stopping();
            reporter
                .set_not_serving::<RateLimitServiceServer<RateLimitServer>>()
                .await;
            reporter
                .set_not_serving::<RateLimitQuotaServiceServer<QuotaServer>>()
                .await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            tracing::info!("stopping");
        })
        .await?;
    Ok(())
}

/// Binds `address` and serves `router` on it in the background.
async fn serve_http(
    address: std::net::SocketAddr,
    router: Router,
    what: &str,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("{what} port {address}: {e}"))?;
    let what = what.to_string();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "{what} server stopped");
        }
    });
    Ok(())
}

/// Resolves on `SIGTERM` (Kubernetes stopping the pod) or `SIGINT`.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
