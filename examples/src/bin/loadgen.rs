//! `loadgen`: sends requests at a fixed rate from a number of client addresses (as
//! `X-Forwarded-For`) to any of the binaries, with a progress line and a summary table.
//!
//! `cargo run -p ratelimit-examples --bin loadgen -- --target 127.0.0.1:8000 --rate 200 --clients 10`

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::Method;
use clap::Parser;
use ratelimit_examples::loadgen::{Load, run, table};

/// A load generator.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server to load.
    #[arg(long)]
    target: SocketAddr,
    /// Requests a second, all clients together.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Distinct client addresses, used in turn.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The method.
    #[arg(long, default_value = "GET")]
    method: Method,
    /// The path.
    #[arg(long, default_value = "/auth/verify")]
    path: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let clients = (0..args.clients.max(1))
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let result = run(
        args.target,
        vec![Load {
            name: format!("{} {}", args.method, args.path),
            clients,
            per_second: args.rate,
            start: Duration::ZERO,
            duration: Duration::from_secs(args.seconds),
            method: args.method,
            path: args.path,
        }],
        true,
    )
    .await;
    match result {
        Ok(rows) => {
            print!("{}", table(&rows));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
