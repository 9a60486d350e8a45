//! Log output for the example binaries: one place for the subscriber they all install.

/// Installs a `tracing` subscriber writing to standard error, filtered by `RUST_LOG` when it is set
/// and by `default_filter` otherwise (such as `"info"`). Standard error, so that a binary's own
/// output on standard output (the demo's and loadgen's tables) stays clean to read or parse.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
