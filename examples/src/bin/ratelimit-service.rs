//! `ratelimit-service`: Envoy's rate limit service (gRPC `ShouldRateLimit`) over the memory store,
//! Redis, Redis Cluster or DynamoDB, configured with envoyproxy/ratelimit's descriptor YAML and
//! reloaded when the file changes; `/metrics`, `/status` and health over HTTP, and the standard
//! gRPC health service.
//!
//! Health is three questions, answered apart, because a Redis outage must neither restart nor
//! unroute the replicas that keep deciding through it:
//! - `/livez`: the process answers (liveness).
//! - `/readyz` (and `/healthz`, its old name): a configuration is loaded and decisions are served,
//!   in whatever failure mode (readiness). 200 while the store is down: the failure policy
//!   decides, and Envoy gets an answer.
//! - store health: `ratelimit_service_store_healthy` on `/metrics`, and on `/status`.
//! - gRPC `grpc.health.v1.Health`: `envoy.service.ratelimit.v3.RateLimitService` and `""` are
//!   SERVING once the configuration is loaded and the gRPC port is bound.
//!
//! `cargo run -p ratelimit-examples --bin ratelimit-service -- --config config/ratelimit.yaml`

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use ratelimit_anomaly::tower::{AnomalyTask, spawn};
use ratelimit_anomaly::{Action, Actuator, Controller, ControllerConfig, Monitor};
use ratelimit_core::{FailurePolicy, Limiter, MemoryStore, Store};
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::metrics::Metrics;
use ratelimit_examples::envoy::reload::Reloader;
use ratelimit_examples::envoy::service::RateLimitServer;

/// Envoy's rate limit service, on ratelimit.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The descriptor configuration: a YAML file, or a directory of them (one domain each).
    #[arg(long)]
    config: PathBuf,
    /// Where to serve gRPC (`envoy.service.ratelimit.v3.RateLimitService`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    grpc: SocketAddr,
    /// Where to serve `/metrics`, `/status`, `/livez`, `/readyz` and `/healthz`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Where the buckets live.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    store: StoreKind,
    /// Redis URL, for `--store redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Redis Cluster seed nodes, comma-separated, for `--store redis-cluster`.
    #[arg(
        long,
        default_value = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002"
    )]
    redis_nodes: String,
    /// DynamoDB table, for `--store dynamodb` (region, credentials and endpoint from the usual
    /// AWS places: AWS_REGION, AWS_ENDPOINT_URL_DYNAMODB, ...).
    #[arg(long, default_value = "ratelimit")]
    dynamodb_table: String,
    /// What to answer while the store is unreachable.
    #[arg(long, value_enum, default_value_t = Failure::Local)]
    failure_policy: Failure,
    /// How many replicas of this service share the store, as the deployment declares it: with
    /// `--failure-policy local`, each replica then enforces its share of every limit while the
    /// store is away, so all of them together keep the limit instead of multiplying it.
    #[arg(long, env = "RATELIMIT_REPLICAS", default_value_t = 1)]
    replicas: u32,
    /// How often to look for a changed configuration, in milliseconds; 0 turns reloading off.
    #[arg(long, default_value_t = 1000)]
    reload_ms: u64,
    /// How long a changed configuration must stay the same before it is loaded, in
    /// milliseconds (a file read while it is being written is never loaded).
    #[arg(long, default_value_t = 2000)]
    reload_settle_ms: u64,
    /// Anomaly detection: `shadow` reports what it would do on /status and in the log; `off`.
    #[arg(long, value_enum, default_value_t = Anomaly::Shadow)]
    anomaly: Anomaly,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Anomaly {
    /// Detect and report, change nothing (the service's limits come from its configuration).
    Shadow,
    /// No detection.
    Off,
}

/// The service's limits are its configuration's: anomaly actions are reported, not applied.
struct ReportOnly;

impl Actuator for ReportOnly {
    fn apply(&self, _action: &Action) {}
}

fn status_page(
    metrics: &Metrics,
    store_healthy: bool,
    config: &Config,
    anomaly: Option<&AnomalyTask>,
) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>ratelimit-service</title><style>body{font-family:sans-serif;margin:2em}\
         pre{background:#f4f4f4;padding:1em}</style></head><body><h1>ratelimit-service</h1>",
    );
    let mut domains: Vec<&str> = config.domains().collect();
    domains.sort_unstable();
    let _ = write!(
        page,
        "<p>Store: <b>{}</b>. Domains: {}.</p><h2>Answers</h2><pre>{}</pre>",
        if store_healthy {
            "healthy"
        } else {
            "unavailable"
        },
        domains.join(", "),
        metrics.render()
    );
    if let Some(task) = anomaly {
        let status = task.status();
        let _ = write!(
            page,
            "<h2>Anomaly detection (shadow)</h2><p>State {:?}, score {:.2}; last second: {} \
             requests, {} over limit.</p><h3>Busiest clients</h3><ul>",
            status.state, status.score, status.requests, status.limited
        );
        for (client, count) in &status.top_clients {
            let _ = write!(page, "<li>{} ({count})</li>", client.replace('<', "&lt;"));
        }
        page.push_str("</ul><h3>Actions it would take</h3><ul>");
        for decided in status.recent.iter().rev() {
            let _ = write!(
                page,
                "<li>{}</li>",
                format!("{:?}", decided.action).replace('<', "&lt;")
            );
        }
        page.push_str("</ul>");
    }
    page.push_str("</body></html>");
    page
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// In this process (replicas do not share counts).
    Memory,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
    /// A DynamoDB table.
    Dynamodb,
}

#[derive(Clone, Copy, ValueEnum)]
enum Failure {
    /// Admit everything.
    Open,
    /// Refuse everything.
    Closed,
    /// Decide with buckets in this process.
    Local,
}

async fn store(args: &Args) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    Ok(match args.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Redis => Arc::new(ratelimit_redis::RedisStore::connect(&args.redis_url).await?),
        StoreKind::RedisCluster => {
            let nodes: Vec<&str> = args.redis_nodes.split(',').map(str::trim).collect();
            Arc::new(ratelimit_redis::RedisStore::connect_cluster(&nodes).await?)
        }
        StoreKind::Dynamodb => {
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https();
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(http)
                .load()
                .await;
            let client = aws_sdk_dynamodb::Client::new(&config);
            ratelimit_dynamodb::create_table(&client, &args.dynamodb_table).await?;
            Arc::new(
                ratelimit_dynamodb::DynamoStore::connect(client, args.dynamodb_table.clone())
                    .await?,
            )
        }
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The error's message (file, line, field), not its Debug form.
            eprintln!("ratelimit-service: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let texts = Config::read(&args.config)?;
    let config = Config::from_texts(&texts)?;
    let failure = match args.failure_policy {
        Failure::Open => FailurePolicy::Open,
        Failure::Closed => FailurePolicy::Closed,
        Failure::Local => FailurePolicy::LocalFallback,
    };
    let limiter = Arc::new(
        Limiter::from_arc(store(&args).await?)
            .with_failure_policy(failure)
            .with_replicas(args.replicas),
    );
    let monitor = (args.anomaly == Anomaly::Shadow).then(|| Arc::new(Monitor::default()));
    // A limit the store cannot count is refused here, once, rather than on every request.
    let mut server = RateLimitServer::try_new(config, limiter.clone())?;
    if let Some(monitor) = &monitor {
        server = server.with_monitor(monitor.clone());
    }
    let anomaly = monitor.map(|monitor| {
        let controller = Controller::new(ControllerConfig {
            shadow: true,
            ..ControllerConfig::default()
        });
        Arc::new(spawn(
            monitor,
            controller,
            ReportOnly,
            Duration::from_secs(1),
        ))
    });
    let reload_stats = if args.reload_ms == 0 {
        tracing::info!("reloading is off (--reload-ms 0)");
        None
    } else {
        let reloader = Reloader::new(args.config.clone(), Duration::from_millis(args.reload_ms))?
            .settle(Duration::from_millis(args.reload_settle_ms))
            .checked_for(limiter.store().clone())
            .loaded(texts);
        let stats = reloader.stats();
        // Runs until the process ends.
        drop(reloader.spawn(server.config_handle())?);
        Some(stats)
    };
    // Ready once the gRPC port is bound: the configuration is loaded by then.
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = server.metrics();
    let (metrics_limiter, page_metrics, page_config, page_limiter) = (
        limiter.clone(),
        server.metrics(),
        server.config_handle(),
        limiter.clone(),
    );
    let readiness = {
        let (ready, limiter) = (ready.clone(), limiter.clone());
        move || {
            let (ready, limiter) = (ready.clone(), limiter.clone());
            async move {
                if !ready.load(Ordering::Acquire) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "starting".to_string());
                }
                // The store's health is reported, not judged: while it is down the failure
                // policy decides, and this replica still answers every request.
                let store = if limiter.store_healthy() {
                    "store healthy".to_string()
                } else {
                    format!(
                        "store unavailable; failure policy {:?} decides",
                        limiter.failure_policy()
                    )
                };
                (StatusCode::OK, format!("ready; {store}"))
            }
        }
    };
    let http = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let mut out = metrics.render_with_store(metrics_limiter.store_healthy());
                if let Some(stats) = &reload_stats {
                    out.push_str(&stats.render());
                }
                out
            }),
        )
        .route(
            "/status",
            get(move || {
                let config = page_config.read().clone();
                let page = status_page(
                    &page_metrics,
                    page_limiter.store_healthy(),
                    &config,
                    anomaly.as_deref(),
                );
                async move { Html(page) }
            }),
        )
        .route("/livez", get(|| async { "alive" }))
        .route("/readyz", get(readiness.clone()))
        .route("/healthz", get(readiness));
    let listener = tokio::net::TcpListener::bind(args.http).await?;
    tracing::info!(grpc = %args.grpc, http = %args.http, "ratelimit-service listening");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, http).await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });
    let incoming = tonic::transport::server::TcpIncoming::bind(args.grpc)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RateLimitServiceServer<RateLimitServer>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    ready.store(true, Ordering::Release);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(server.into_service())
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
