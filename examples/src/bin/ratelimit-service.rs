//! `ratelimit-service`: Envoy's rate limit service (gRPC `ShouldRateLimit`) over the memory store,
//! Redis, Redis Cluster or DynamoDB, configured with envoyproxy/ratelimit's descriptor YAML and
//! reloaded when the file changes; `/metrics` and `/healthz` over HTTP.
//!
//! `cargo run -p ratelimit-examples --bin ratelimit-service -- --config config/ratelimit.yaml`

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use clap::{Parser, ValueEnum};
use ratelimit_anomaly::tower::{AnomalyTask, spawn};
use ratelimit_anomaly::{Action, Actuator, Controller, ControllerConfig, Monitor};
use ratelimit_core::{FailurePolicy, Limiter, MemoryStore, Store};
use ratelimit_examples::descriptors::Config;
use ratelimit_examples::reload;
use ratelimit_examples::rls::{Metrics, RateLimitServer};

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
    /// Where to serve `/metrics` and `/healthz`.
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
    /// How often to look for a changed configuration, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reload_ms: u64,
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
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    let failure = match args.failure_policy {
        Failure::Open => FailurePolicy::Open,
        Failure::Closed => FailurePolicy::Closed,
        Failure::Local => FailurePolicy::LocalFallback,
    };
    let limiter = Arc::new(Limiter::from_arc(store(&args).await?).with_failure_policy(failure));
    let monitor = (args.anomaly == Anomaly::Shadow).then(|| Arc::new(Monitor::default()));
    let mut server = RateLimitServer::new(config, limiter.clone());
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
    let _watch = reload::watch(
        args.config.clone(),
        server.config_handle(),
        Duration::from_millis(args.reload_ms),
    );
    let metrics = server.metrics();
    let (page_metrics, page_config, page_limiter) =
        (server.metrics(), server.config_handle(), limiter.clone());
    let http = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
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
        .route(
            "/healthz",
            get(move || async move {
                if limiter.store_healthy() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(args.http).await?;
    tracing::info!(grpc = %args.grpc, http = %args.http, "ratelimit-service listening");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, http).await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });
    tonic::transport::Server::builder()
        .add_service(server.into_service())
        .serve_with_shutdown(args.grpc, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
