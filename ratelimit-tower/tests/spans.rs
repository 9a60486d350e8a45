//! Tracing: each request's decisions are spans a subscriber (an OpenTelemetry exporter through
//! tracing-opentelemetry, say) receives: `ratelimit.request` around the store call, and inside it one
//! `ratelimit.decision` per rule with the rule, a hash of the key and the outcome. The raw key (a
//! client's address) is in no field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{Request, StatusCode};
use parking_lot::Mutex;
use ratelimit_core::{Limiter, MemoryStore, Policy};
use ratelimit_tower::{KeyExtractor, RateLimitLayer, Rule};
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as the subscriber saw it: its name, its parent's name, and every field it was given.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    parent: Option<String>,
    fields: BTreeMap<String, String>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// Keeps every span opened while it is the default subscriber.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = Seen {
            name: attrs.metadata().name().to_string(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.name().to_string()),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().push(seen);
    }

    fn on_record(&self, _: &Id, _: &Record<'_>, _: Context<'_, S>) {}
}

fn request() -> Request<Body> {
    let mut request = Request::get("/hello").body(Body::empty()).unwrap();
    let peer: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

#[test]
fn each_rule_decision_is_a_span_inside_the_requests_span_and_the_key_is_hashed() {
    let layer = RateLimitLayer::builder(Arc::new(Limiter::new(MemoryStore::new())))
        .rule(Rule::new(
            "per-ip",
            KeyExtractor::PeerIp,
            Policy::per_hour(1).unwrap(),
        ))
        .rule(Rule::new(
            "global",
            KeyExtractor::Global,
            Policy::per_hour(100).unwrap(),
        ))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(layer);
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let statuses = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let mut statuses = Vec::new();
            for _ in 0..2 {
                statuses.push(app.clone().oneshot(request()).await.unwrap().status());
            }
            statuses
        })
    });
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);

    let spans = recorder.0.lock().clone();
    let checks: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "ratelimit.request")
        .collect();
    assert_eq!(checks.len(), 2, "{spans:#?}");
    assert!(
        checks
            .iter()
            .all(|s| s.fields.get("rules").map(String::as_str) == Some("2"))
    );
    let decisions: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "ratelimit.decision")
        .collect();
    let summary: Vec<(&str, &str)> = decisions
        .iter()
        .map(|s| (s.fields["rule"].as_str(), s.fields["outcome"].as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("per-ip", "Admitted"),
            ("global", "Admitted"),
            ("per-ip", "Limited"),
            ("global", "Limited"),
        ]
    );
    for decision in &decisions {
        assert_eq!(decision.parent.as_deref(), Some("ratelimit.request"));
        assert!(
            decision.fields["key_hash"].parse::<u64>().is_ok(),
            "{decision:?}"
        );
        assert!(
            decision.fields.values().all(|v| !v.contains("203.0.113")),
            "a raw key in {decision:?}"
        );
    }
    // One key, one hash: the two requests' per-ip decisions carry the same one.
    assert_eq!(
        decisions[0].fields["key_hash"],
        decisions[2].fields["key_hash"]
    );
    assert_ne!(
        decisions[0].fields["key_hash"],
        decisions[1].fields["key_hash"]
    );
}
