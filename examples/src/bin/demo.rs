//! The whole chain in one process on loopback, with the embedded memory store, under a short
//! scripted load: normal clients, one abusive client, then a flood. Prints where everything
//! listens, a progress line, the summary table and what the anomaly controller did; exits by itself.
//!
//! `cargo run -p ratelimit-examples --bin demo`

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use clap::Parser;
use ratelimit_anomaly::{ControllerConfig, DetectorConfig};
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::loadgen::{Load, run, table};
use ratelimit_examples::{egress, mesh};

/// Run the gateway system under a scripted load for about twenty seconds.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where the ingress gateway listens (its /status page too).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

fn clients(prefix: &str, count: u32) -> Vec<String> {
    (0..count)
        .map(|i| format!("{prefix}.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::logging::init("warn,ratelimit_examples=info");
    let args = Args::parse();
    let mesh = mesh::start(mesh::MeshLimits::default()).await?;
    let egress = egress::start(mesh).await?;
    let gateway = start(
        args.listen,
        egress,
        GatewayConfig {
            per_client: 20,
            global: 600,
            anomaly: ControllerConfig {
                // A short demo: learn for five seconds, penalise for thirty.
                detector: DetectorConfig {
                    warmup_ticks: 5,
                    ..DetectorConfig::default()
                },
                penalty_ttl: Duration::from_secs(30),
                ..ControllerConfig::default()
            },
            ..GatewayConfig::default()
        },
    )
    .await?;
    println!("ratelimit demo: the gateway system on loopback, memory store");
    println!(
        "  ingress gateway  http://{}   (live status: http://{}/status)",
        gateway.address, gateway.address
    );
    println!("  egress gateway   http://{egress}");
    println!("  auth             http://{}", mesh.auth);
    println!("  orders           http://{}", mesh.orders);
    println!("  payments         http://{}", mesh.payments);
    println!(
        "  limits: 20/s per client, 600/s in all at the gateway; per calling service in the mesh"
    );
    println!();

    let total = Duration::from_secs(args.seconds.max(6));
    let loads = vec![
        Load {
            name: "normal (40 clients)".into(),
            clients: clients("10.1", 40),
            per_second: 120,
            start: Duration::ZERO,
            duration: total,
            method: Method::POST,
            path: "/orders".into(),
        },
        Load {
            name: "abusive (1 client)".into(),
            clients: vec!["10.66.6.6".into()],
            per_second: 150,
            start: total / 4,
            duration: total / 2,
            method: Method::POST,
            path: "/orders".into(),
        },
        Load {
            name: "flood (500 sources)".into(),
            clients: clients("172.20", 500),
            per_second: 1_000,
            start: total / 2,
            duration: total / 4,
            method: Method::GET,
            path: "/auth/verify".into(),
        },
    ];
    println!(
        "load: normal clients all along, one abusive client from {:?}, a flood from {:?}",
        total / 4,
        total / 2
    );
    let rows = run(gateway.address, loads, true).await?;
    println!();
    print!("{}", table(&rows));
    println!();
    let status = gateway.anomaly.status();
    println!(
        "anomaly controller: {:?}, global limit at {:.0}%",
        status.state,
        status.factor * 100.0
    );
    for explained in &status.recent {
        // The controller's own explanation: cohort, signal, evidence, action, until when.
        let line = &explained.text;
        println!("  - {line}");
    }
    if status.recent.is_empty() {
        println!("  - no action");
    }
    Ok(())
}
