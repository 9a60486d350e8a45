//! The service's `/status` page: the store's health, the domains, the answers so far and, with
//! anomaly detection in shadow mode, what the controller would do and why.

use std::fmt::Write as _;

use ratelimit_anomaly::tower::AnomalyTask;

use super::config::Config;
use super::metrics::Metrics;

/// The page, as HTML that refreshes itself every two seconds.
pub fn page(
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
        for explained in status.recent.iter().rev() {
            // The controller's explanation: cohort, signal, evidence, action, until when.
            let _ = write!(
                page,
                "<li>{}</li>",
                explained.text.replace('&', "&amp;").replace('<', "&lt;")
            );
        }
        page.push_str("</ul>");
    }
    page.push_str("</body></html>");
    page
}
