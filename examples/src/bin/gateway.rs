//! `gateway`: the ingress gateway. Per-client and global limits (embedded, memory store), the
//! anomaly controller, `/status` and `/metrics`; admitted requests are forwarded to `--egress`.
//!
//! `cargo run -p ratelimit-examples --bin gateway -- --egress 127.0.0.1:9000`

use std::net::SocketAddr;

use clap::Parser;
use ratelimit_anomaly::ControllerConfig;
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_tower::{ForwardedHeader, IpPrefixes};

fn forwarded_header(name: &str) -> Result<ForwardedHeader, Box<dyn std::error::Error>> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => ForwardedHeader::XForwardedFor,
        "forwarded" => ForwardedHeader::Forwarded,
        other => ForwardedHeader::Single(other.parse()?),
    })
}

/// The ingress gateway.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// The egress gateway to forward admitted requests to.
    #[arg(long)]
    egress: SocketAddr,
    /// Requests a second per client address.
    #[arg(long, default_value_t = 20)]
    per_client: u32,
    /// Requests a second for all clients together.
    #[arg(long, default_value_t = 1000)]
    global: u32,
    /// Networks of proxies in front whose forwarding header is believed (repeatable).
    #[arg(long = "trusted-proxy", default_values_t = ["127.0.0.0/8".to_string(), "::1/128".to_string()])]
    trusted_proxies: Vec<String>,
    /// The one header those proxies set: x-forwarded-for, forwarded, or the name of a
    /// single-address header such as x-real-ip or cf-connecting-ip. Every other one is ignored.
    #[arg(long, default_value = "x-forwarded-for")]
    client_ip_header: String,
    /// Clients are keyed by their IPv4 network of this many bits.
    #[arg(long, default_value_t = 32)]
    ipv4_prefix: u8,
    /// Clients are keyed by their IPv6 network of this many bits.
    #[arg(long, default_value_t = 64)]
    ipv6_prefix: u8,
    /// Report anomaly actions without applying them.
    #[arg(long)]
    anomaly_shadow: bool,
    /// Ask this rate limit service (gRPC URL, e.g. http://127.0.0.1:8081) instead of deciding here.
    #[arg(long)]
    ratelimit_service: Option<String>,
    /// The domain to ask the rate limit service in.
    #[arg(long, default_value = "edge")]
    domain: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::logging::init("info");
    let args = Args::parse();
    let gateway = start(
        args.listen,
        args.egress,
        GatewayConfig {
            per_client: args.per_client,
            global: args.global,
            trusted_proxies: args.trusted_proxies,
            forwarded_header: forwarded_header(&args.client_ip_header)?,
            prefixes: IpPrefixes::new(args.ipv4_prefix, args.ipv6_prefix)?,
            anomaly: ControllerConfig {
                shadow: args.anomaly_shadow,
                ..ControllerConfig::default()
            },
            limited: true,
            remote: args.ratelimit_service.map(|url| (url, args.domain)),
        },
    )
    .await?;
    tracing::info!(address = %gateway.address, "gateway listening; status at /status");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
