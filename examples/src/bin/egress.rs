//! `egress`: the mesh services (auth, orders, payments, each limited per caller) and the egress
//! gateway that routes to them by path prefix, in one process.
//!
//! `cargo run -p ratelimit-examples --bin egress -- --listen 127.0.0.1:9000`

use std::net::SocketAddr;

use clap::Parser;
use ratelimit_examples::{egress, mesh};

/// The egress gateway and the services behind it.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where the egress gateway listens.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Requests a second each caller may send to payments.
    #[arg(long, default_value_t = 300)]
    payments_per_caller: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::logging::init("info");
    let args = Args::parse();
    let mesh = mesh::start(mesh::MeshLimits {
        payments: args.payments_per_caller,
        ..mesh::MeshLimits::default()
    })
    .await?;
    tracing::info!(auth = %mesh.auth, orders = %mesh.orders, payments = %mesh.payments, "services listening");
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %args.listen, "egress listening");
    axum::serve(listener, egress::router(mesh)).await?;
    Ok(())
}
