//! The command line: flags, the subcommand, and the values the enum flags take.
//!
//! Apart from resolving because clap derives all of it: these types are the flags as typed, before
//! the environment and the defaults are applied.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The command line of `ratelimit-service`.
#[derive(Debug, Parser)]
#[command(
    name = "ratelimit-service",
    version,
    about = "Envoy's rate limit service, on ratelimit"
)]
pub struct Cli {
    /// What to do; serving when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings given as flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validates a configuration file or directory, prints the descriptor tree with the limit
    /// each path gets, and exits non-zero with file, line and field on the first error.
    Check {
        /// A YAML file, or a directory of them (one domain each).
        path: PathBuf,
    },
}

/// The settings given as flags; each one left out falls back to its environment variable, then
/// to its default.
#[derive(Debug, Default, Args)]
pub struct Flags {
    /// The descriptor configuration: a YAML file, or a directory of them [default:
    /// `$RUNTIME_ROOT/$RUNTIME_SUBDIRECTORY/$RUNTIME_APPDIRECTORY`].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to serve gRPC [default: `$GRPC_HOST:$GRPC_PORT`, 0.0.0.0:8081].
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// Where to serve HTTP: `/healthcheck`, `/json`, `/metrics`, `/status` and `/status.json`,
    /// `/livez`, `/readyz` [default: `$HOST:$PORT`, 0.0.0.0:8080].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Where to serve the debug endpoints (`/rlconfig`) [default: `$DEBUG_HOST:$DEBUG_PORT`,
    /// 0.0.0.0:6070].
    #[arg(long)]
    pub debug: Option<SocketAddr>,
    /// Where the buckets live [default: from `$BACKEND_TYPE` and `$REDIS_TYPE`; memory when
    /// neither `$BACKEND_TYPE` nor `$REDIS_URL` is set].
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,
    /// Redis URL (`redis://host:port/db`, `rediss://`, `redis+unix:///path`) [default: from
    /// `$REDIS_URL`, `$REDIS_SOCKET_TYPE`, `$REDIS_AUTH`, `$REDIS_TLS`; redis://127.0.0.1:6379].
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated URLs [default: from `$REDIS_URL` with
    /// `REDIS_TYPE=cluster`; redis://127.0.0.1:7000,7001,7002].
    #[arg(long)]
    pub redis_nodes: Option<String>,
    /// DynamoDB table, for `--store dynamodb` [default: `$DYNAMODB_TABLE`, ratelimit]. Region,
    /// credentials and endpoint come from the usual AWS places.
    #[arg(long)]
    pub dynamodb_table: Option<String>,
    /// What to answer while the store is unreachable [default: `$FAILURE_POLICY`, local].
    #[arg(long, value_enum)]
    pub failure_policy: Option<Failure>,
    /// How many replicas share the store; with `--failure-policy local` each enforces its share
    /// of every limit while the store is away [default: `$RATELIMIT_REPLICAS`, 1].
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Count the replicas in the store itself, each heartbeating every this many milliseconds
    /// (the count then follows replicas that come and go; `--replicas` stays a floor); 0 is off
    /// [default: `$RATELIMIT_MEMBERSHIP_PERIOD_MS`, 0].
    #[arg(long)]
    pub membership_period_ms: Option<u64>,
    /// How long a changed configuration must stay the same before it is loaded, in
    /// milliseconds (a file read while it is being written is never loaded) [default: 2000].
    #[arg(long)]
    pub reload_settle_ms: Option<u64>,
    /// How often to look for a changed configuration, in milliseconds, as well as on kernel
    /// events; 0 turns reloading off [default: 1000].
    #[arg(long)]
    pub reload_ms: Option<u64>,
    /// Anomaly detection: `shadow` reports what it would do on /status and in the log; `off`
    /// [default: shadow].
    #[arg(long, value_enum)]
    pub anomaly: Option<Anomaly>,
}

/// Where the buckets live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In this process (replicas do not share counts).
    Memory,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
    /// A DynamoDB table.
    Dynamodb,
}

/// What to answer while the store is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Failure {
    /// Admit everything.
    Open,
    /// Refuse everything.
    Closed,
    /// Decide with buckets in this process.
    Local,
}

/// Whether anomaly detection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Anomaly {
    /// Detect and report, change nothing (the service's limits come from its configuration).
    Shadow,
    /// No detection.
    Off,
}
