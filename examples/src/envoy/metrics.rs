//! What the service has answered, for `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the service has answered.
#[derive(Debug, Default)]
pub struct Metrics {
    // Relaxed: independent counters, read for display only.
    ok: AtomicU64,
    over_limit: AtomicU64,
    shadow_over_limit: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
}

impl Metrics {
    /// One request answered: over limit or not.
    pub fn answered(&self, over: bool) {
        let counter = if over { &self.over_limit } else { &self.ok };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One request answered with an error status.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// One descriptor in shadow or quota mode over its limit.
    pub fn shadow_over_limit(&self) {
        self.shadow_over_limit.fetch_add(1, Ordering::Relaxed);
    }

    /// One store call the limiter refused as invalid.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = "ratelimit_service_requests_total";
        header(
            &mut out,
            requests,
            "counter",
            "ShouldRateLimit calls by answer.",
        );
        for (code, counter) in [
            ("ok", &self.ok),
            ("over_limit", &self.over_limit),
            ("error", &self.errors),
        ] {
            let value = counter.load(Ordering::Relaxed);
            let _ = writeln!(out, "{requests}{{code=\"{code}\"}} {value}");
        }
        sample(
            &mut out,
            "ratelimit_service_shadow_over_limit_total",
            "counter",
            "Descriptors in shadow mode that were over their limit.",
            self.shadow_over_limit.load(Ordering::Relaxed),
        );
        sample(
            &mut out,
            "ratelimit_service_refused_total",
            "counter",
            "Store calls the limiter refused as invalid, answered OVER_LIMIT.",
            self.refused.load(Ordering::Relaxed),
        );
        out
    }

    /// [`render`](Self::render) and the store's health as a gauge (1 healthy, 0 while the store
    /// fails and the failure policy decides).
    pub fn render_with_store(&self, store_healthy: bool) -> String {
        let mut out = self.render();
        sample(
            &mut out,
            "ratelimit_service_store_healthy",
            "gauge",
            "Whether the last store call succeeded (0: the failure policy decides).",
            u64::from(store_healthy),
        );
        out
    }
}

/// A metric's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric of one unlabelled sample.
fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}
