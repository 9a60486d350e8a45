//! The metrics' unit tests: the hit split against envoyproxy/ratelimit's, the labels, every
//! name, and a second install.
#![allow(clippy::unwrap_used)]

use super::*;

/// The exposition text of what `f` records, in a recorder of its own.
fn recorded(f: impl FnOnce()) -> String {
    let recorder = builder().unwrap().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        f();
    });
    handle.render()
}

/// The value of the sample `sample` (name and labels, exactly as rendered).
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn splits_hits_as_envoyproxy_does() {
    let near = near_threshold(10, DEFAULT_NEAR_LIMIT_RATIO);
    assert_eq!(near, 8);
    // Well within: 3 hits from 0.
    assert_eq!(
        RuleHits::split(10, near, 0, 3, false),
        RuleHits {
            total: 3,
            within: 3,
            ..RuleHits::default()
        }
    );
    // Crossing the threshold: 7 to 10, the two above 8 are near.
    assert_eq!(
        RuleHits::split(10, near, 7, 3, false),
        RuleHits {
            total: 3,
            near: 2,
            within: 3,
            ..RuleHits::default()
        }
    );
    // Already above it: every hit near.
    assert_eq!(RuleHits::split(10, near, 8, 2, false).near, 2);
    // Crossing the limit from 9 with 4: 3 over, 1 near (9 to 10).
    assert_eq!(
        RuleHits::split(10, near, 9, 4, true),
        RuleHits {
            total: 4,
            over: 3,
            near: 1,
            shadow: 3,
            ..RuleHits::default()
        }
    );
    // Crossing it from below the threshold: near is threshold to limit.
    assert_eq!(RuleHits::split(10, near, 5, 10, false).near, 2);
    // Already over: every hit over, none near.
    assert_eq!(
        RuleHits::split(10, near, 10, 2, false),
        RuleHits {
            total: 2,
            over: 2,
            ..RuleHits::default()
        }
    );
    // A limit of zero: every hit over.
    assert_eq!(RuleHits::split(0, 0, 0, 1, false).over, 1);
    // Checking only (no hit) counts nothing.
    assert_eq!(RuleHits::split(10, near, 9, 0, false).total, 0);
}

#[test]
fn near_threshold_is_envoyproxys() {
    assert_eq!(near_threshold(100, 0.8), 80);
    assert_eq!(near_threshold(5, 0.5), 2);
    assert_eq!(near_threshold(3, 0.0), 0);
    assert_eq!(near_threshold(7, 1.0), 7);
}

#[test]
fn rules_are_labelled_by_domain_and_keys() {
    let mut one = StatKey::new("edge");
    one.push("remote_address", None);
    let mut two = StatKey::new("edge");
    two.push("tenant", Some("acme"));
    two.push("plan", Some("free"));
    let text = recorded(|| {
        record_rule(&one, &RuleHits::split(10, 8, 9, 2, false));
        record_rule(&two, &RuleHits::split(10, 8, 0, 1, false));
    });
    let rule1 = "{domain=\"edge\",key1=\"remote_address\"}";
    assert_eq!(value(&text, &format!("{TOTAL_HITS}{rule1}")), Some(2.0));
    assert_eq!(value(&text, &format!("{OVER_LIMIT}{rule1}")), Some(1.0));
    assert_eq!(value(&text, &format!("{NEAR_LIMIT}{rule1}")), Some(1.0));
    // Counters that did not grow are not there.
    assert_eq!(value(&text, &format!("{WITHIN_LIMIT}{rule1}")), None);
    let rule2 = "{domain=\"edge\",key1=\"tenant_acme\",key2=\"plan_free\"}";
    assert_eq!(value(&text, &format!("{TOTAL_HITS}{rule2}")), Some(1.0));
    assert_eq!(value(&text, &format!("{WITHIN_LIMIT}{rule2}")), Some(1.0));
    assert!(
        text.contains(&format!("# TYPE {TOTAL_HITS} counter")),
        "{text}"
    );
}

#[test]
fn calls_store_and_reloads_have_their_names() {
    let text = recorded(|| {
        record_call(Duration::from_micros(300));
        record_store_error(StoreFailure::Timeout);
        record_store_health(false);
        register_config_loads();
        record_config_refused();
        let tallies = Metrics::default();
        tallies.answered(true);
        tallies.error();
    });
    let method = "{grpc_method=\"ShouldRateLimit\"}";
    assert_eq!(
        value(&text, &format!("{TOTAL_REQUESTS}{method}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("{RESPONSE_TIME}_count{method}")),
        Some(1.0)
    );
    // A true histogram: 300 µs is in the 0.0005 bucket and not the 0.00025 one.
    let bucket = |le: &str| {
        value(
            &text,
            &format!("{RESPONSE_TIME}_bucket{{grpc_method=\"ShouldRateLimit\",le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("0.00025"), Some(0.0));
    assert_eq!(bucket("0.0005"), Some(1.0));
    assert_eq!(
        value(&text, &format!("{STORE_ERRORS}{{kind=\"timeout\"}}")),
        Some(1.0)
    );
    assert_eq!(value(&text, STORE_HEALTHY), Some(0.0));
    assert_eq!(value(&text, CONFIG_LOAD_SUCCESS), Some(0.0));
    assert_eq!(value(&text, CONFIG_LOAD_ERROR), Some(1.0));
    assert_eq!(
        value(&text, &format!("{REQUESTS}{{code=\"over_limit\"}}")),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("{SHOULD_RATE_LIMIT_ERROR}{{err_type=\"service_error\"}}")
        ),
        Some(1.0)
    );
}

#[test]
fn a_second_global_install_is_an_error_not_a_panic() {
    // The first may fail too if another test of this binary installed one: either way, at
    // most one succeeds and the others are typed errors.
    let first = install();
    let second = install();
    assert!(first.is_ok() || second.is_err());
    assert!(matches!(second, Err(MetricsError::Recorder(_))));
}
