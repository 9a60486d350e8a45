//! The configuration's unit tests: parsing and its errors, matching as Envoy does, statistics
//! keys, merging, and the shipped file.
#![allow(clippy::unwrap_used, clippy::panic)]

use ratelimit_core::BucketKey;

use super::*;

const EXAMPLE: &str = r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: path
    value: /login
    rate_limit: { unit: minute, requests_per_unit: 5 }
    shadow_mode: true
  - key: path
    rate_limit: { unlimited: true }
  - key: tenant
    descriptors:
      - key: plan
        value: free
        rate_limit: { unit: hour, requests_per_unit: 1000 }
"#;

fn invalid(text: &str) -> (usize, String) {
    match Config::parse("bad.yaml", text) {
        Err(ConfigError::Invalid {
            line,
            message,
            file,
            ..
        }) => {
            assert_eq!(file, "bad.yaml");
            (line, message)
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn stat_keys_are_envoyproxys() {
    let config = Config::parse(
        "edge.yaml",
        r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: second, requests_per_unit: 10 }
  - key: path
    value: "/api/*"
    rate_limit: { unit: second, requests_per_unit: 10 }
  - key: tenant
    descriptors:
      - key: plan
        value: free
        rate_limit: { unit: hour, requests_per_unit: 1000 }
      - key: user
        detailed_metric: true
        rate_limit: { unit: hour, requests_per_unit: 1000 }
      - key: route
        value_to_metric: true
        rate_limit: { unit: hour, requests_per_unit: 1000 }
"#,
    )
    .unwrap();
    let key = |entries: &[(&str, &str)]| {
        let entries: Vec<Entry> = entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
        config.limit_for("edge", &entries).unwrap().stat_key
    };
    // Key only: the key; a wildcard: the pattern, not the value.
    let ip = key(&[("remote_address", "10.0.0.1")]);
    assert_eq!(ip.full(), "edge.remote_address");
    assert_eq!(
        (ip.domain(), ip.key1(), ip.key2()),
        ("edge", "remote_address", None)
    );
    assert_eq!(key(&[("path", "/api/v1")]).full(), "edge.path_/api/*");
    let plan = key(&[("tenant", "acme"), ("plan", "free")]);
    assert_eq!(plan.full(), "edge.tenant.plan_free");
    assert_eq!((plan.key1(), plan.key2()), ("tenant", Some("plan_free")));
    // detailed_metric on the last node: the request's values at every level.
    assert_eq!(
        key(&[("tenant", "acme"), ("user", "alice")]).full(),
        "edge.tenant_acme.user_alice"
    );
    // value_to_metric: the request's value at that level only.
    assert_eq!(
        key(&[("tenant", "acme"), ("route", "a.b")]).full(),
        "edge.tenant.route_a.b"
    );
    // A dot in a value does not move the labels.
    let dotted = key(&[("tenant", "acme"), ("route", "a.b")]);
    assert_eq!(
        (dotted.key1(), dotted.key2()),
        ("tenant", Some("route_a.b"))
    );
}

#[test]
fn matches_values_then_wildcards_then_nested() {
    let config = Config::parse("edge.yaml", EXAMPLE).unwrap();
    let ip = config
        .limit_for("edge", &[Entry::new("remote_address", "10.0.0.1")])
        .unwrap();
    assert_eq!(ip.rate_limit.requests_per_unit, 10);
    assert_eq!(
        ip.bucket,
        BucketKey::new("edge")
            .part("remote_address")
            .part("10.0.0.1")
            .finish()
    );
    assert_eq!(ip.field, "descriptors[0]");
    let login = config
        .limit_for("edge", &[Entry::new("path", "/login")])
        .unwrap();
    assert_eq!(login.rate_limit.unit, Unit::Minute);
    assert!(login.shadow_mode);
    let other = config
        .limit_for("edge", &[Entry::new("path", "/x")])
        .unwrap();
    assert!(other.rate_limit.unlimited);
    let plan = config
        .limit_for(
            "edge",
            &[Entry::new("tenant", "acme"), Entry::new("plan", "free")],
        )
        .unwrap();
    assert_eq!(plan.rate_limit.requests_per_unit, 1000);
    assert_eq!(
        plan.bucket,
        BucketKey::new("edge")
            .part("tenant")
            .part("acme")
            .part("plan")
            .part("free")
            .finish()
    );
    assert_eq!(plan.field, "descriptors[3].descriptors[0]");
    // No limit: an unknown key, a node without a limit, an unknown domain.
    assert!(
        config
            .limit_for("edge", &[Entry::new("user", "x")])
            .is_none()
    );
    assert!(
        config
            .limit_for("edge", &[Entry::new("tenant", "acme")])
            .is_none()
    );
    assert!(
        config
            .limit_for(
                "edge",
                &[Entry::new("tenant", "acme"), Entry::new("plan", "paid")]
            )
            .is_none()
    );
    assert!(
        config
            .limit_for("other", &[Entry::new("path", "/x")])
            .is_none()
    );
}

#[test]
fn a_value_spelling_a_deeper_descriptor_has_its_own_bucket() {
    let config = Config::parse(
            "t.yaml",
            "domain: d\ndescriptors:\n  - key: t\n    rate_limit: { unit: second, requests_per_unit: 5 }\n    descriptors:\n      - key: sub\n        rate_limit: { unit: second, requests_per_unit: 1 }\n",
        )
        .unwrap();
    let shallow = config
        .limit_for("d", &[Entry::new("t", "t|sub=s")])
        .unwrap();
    let deep = config
        .limit_for("d", &[Entry::new("t", "t"), Entry::new("sub", "s")])
        .unwrap();
    assert_ne!(shallow.bucket, deep.bucket);
    let long = config
        .limit_for("d", &[Entry::new("t", &"v".repeat(100_000))])
        .unwrap();
    assert!(long.bucket.len() <= ratelimit_core::MAX_KEY_LEN);
}

#[test]
fn errors_name_the_line_and_the_field() {
    let (line, message) = invalid(
        "domain: edge\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n",
    );
    assert_eq!(line, 5);
    assert!(
        message.contains("descriptors[0].rate_limit.unit"),
        "{message}"
    );
    assert!(message.contains("fortnight"), "{message}");

    let (_, message) = invalid(
        "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1, replaces: [{ name: \"\" }] }\n",
    );
    assert!(message.contains("replaces"), "{message}");
    let (_, message) = invalid(
        "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { name: x, unit: second, requests_per_unit: 1, replaces: [{ name: x }] }\n",
    );
    assert!(message.contains("own name"), "{message}");
    let (line, message) = invalid(
        "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1 }\n    shadow_modes: true\n",
    );
    assert_eq!(line, 5);
    assert!(message.contains("shadow_modes"), "{message}");

    let (line, message) = invalid("domain: edge\ndescriptors:\n  - key: a\n    rate_limits: {}\n");
    assert_eq!(line, 4);
    assert!(message.contains("rate_limits"), "{message}");

    let (_, message) = invalid("descriptors: []\n");
    assert!(message.contains("domain"), "{message}");

    let (line, _) = invalid("domain: edge\ndescriptors:\n  - key: [unclosed\n");
    assert!(line >= 3);
}

#[test]
fn whole_file_conflicts_are_refused() {
    let duplicate = "domain: edge\ndescriptors:\n  - key: a\n  - key: a\n";
    assert!(matches!(
        Config::parse("dup.yaml", duplicate),
        Err(ConfigError::Conflict { .. })
    ));
    let mut config = Config::parse("one.yaml", "domain: edge\n").unwrap();
    let again = config.add("two.yaml", "domain: edge\n", false);
    match again {
        Err(ConfigError::Conflict { file, message }) => {
            assert_eq!(file, "two.yaml");
            assert!(message.contains("one.yaml"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn loads_a_directory_of_domains() {
    let dir = std::env::temp_dir().join(format!("rl-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("edge.yaml"), EXAMPLE).unwrap();
    std::fs::write(dir.join("mesh.yml"), "domain: mesh\ndescriptors:\n  - key: caller\n    rate_limit: { unit: second, requests_per_unit: 50 }\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
    let config = Config::load(&dir).unwrap();
    let mut domains: Vec<&str> = config.domains().collect();
    domains.sort();
    assert_eq!(domains, ["edge", "mesh"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn limit_of(config: &Config, entries: &[(&str, &str)]) -> Option<u32> {
    let entries: Vec<Entry> = entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
    config
        .limit_for("d", &entries)
        .map(|m| m.rate_limit.requests_per_unit)
}

#[test]
fn matching_is_envoys_get_limit() {
    let config = Config::parse(
        "d.yaml",
        r#"
domain: d
descriptors:
  - key: path
    value: /api/*/orders
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: path
    value: /api/*
    rate_limit: { unit: second, requests_per_unit: 2 }
  - key: path
    value: /api/admin
    rate_limit: { unit: second, requests_per_unit: 3 }
  - key: path
    rate_limit: { unit: second, requests_per_unit: 4 }
  - key: host
    value: "*.example.*"
    rate_limit: { unit: SECOND, requests_per_unit: 5 }
  - key: tenant
    value: acme
    descriptors:
      - key: plan
        value: paid
        rate_limit: { unit: Minute, requests_per_unit: 6 }
  - key: tenant
    rate_limit: { unit: second, requests_per_unit: 7 }
    descriptors:
      - key: plan
        rate_limit: { unit: second, requests_per_unit: 8 }
"#,
    )
    .unwrap();
    // Exact value first, then the first wildcard in file order, then key only.
    assert_eq!(limit_of(&config, &[("path", "/api/admin")]), Some(3));
    assert_eq!(limit_of(&config, &[("path", "/api/7/orders")]), Some(1));
    assert_eq!(limit_of(&config, &[("path", "/api/7")]), Some(2));
    assert_eq!(limit_of(&config, &[("path", "/web")]), Some(4));
    assert_eq!(limit_of(&config, &[("host", "a.example.org")]), Some(5));
    assert_eq!(limit_of(&config, &[("host", "example.org")]), None);
    // A limit applies at the request's depth only.
    assert_eq!(limit_of(&config, &[("tenant", "other")]), Some(7));
    assert_eq!(
        limit_of(&config, &[("tenant", "other"), ("plan", "x")]),
        Some(8)
    );
    assert_eq!(limit_of(&config, &[("tenant", "acme")]), None);
    // Nor above it: a deeper request does not fall back to a shallower node's limit.
    assert_eq!(
        limit_of(&config, &[("path", "/api/admin"), ("x", "y")]),
        None
    );
    // No backtracking: tenant=acme matched its own node, whose children have no plan=free;
    // the key-only tenant node (whose plan would match) is not tried instead.
    assert_eq!(
        limit_of(&config, &[("tenant", "acme"), ("plan", "free")]),
        None
    );
    assert_eq!(
        limit_of(&config, &[("tenant", "acme"), ("plan", "paid")]),
        Some(6)
    );
    let paid = config
        .limit_for(
            "d",
            &[Entry::new("tenant", "acme"), Entry::new("plan", "paid")],
        )
        .unwrap();
    assert_eq!(paid.rate_limit.unit, Unit::Minute);
    assert_eq!(paid.field, "descriptors[5].descriptors[0]");
}

#[test]
fn share_threshold_puts_every_matching_value_in_one_bucket() {
    let text = |share: bool| {
        format!(
            "domain: d\ndescriptors:\n  - key: files\n    value: files/*\n    share_threshold: {share}\n    rate_limit: {{ unit: hour, requests_per_unit: 10 }}\n"
        )
    };
    let bucket = |config: &Config, value: &str| {
        config
            .limit_for("d", &[Entry::new("files", value)])
            .unwrap()
            .bucket
    };
    let shared = Config::parse("d.yaml", &text(true)).unwrap();
    assert_eq!(
        bucket(&shared, "files/a.pdf"),
        bucket(&shared, "files/b.csv")
    );
    assert_ne!(bucket(&shared, "files/a.pdf"), bucket(&shared, "files/*"));
    let apart = Config::parse("d.yaml", &text(false)).unwrap();
    assert_ne!(bucket(&apart, "files/a.pdf"), bucket(&apart, "files/b.csv"));
    let refused = Config::parse(
        "d.yaml",
        "domain: d\ndescriptors:\n  - key: files\n    value: files\n    share_threshold: true\n",
    );
    assert!(
        matches!(&refused, Err(ConfigError::Conflict { message, .. }) if message.contains("share_threshold")),
        "{refused:?}"
    );
}

#[test]
fn zero_replaces_and_the_other_fields_load() {
    let config = Config::parse(
        "d.yaml",
        r#"
domain: d
descriptors:
  - key: remote_address
    value: 50.0.0.5
    rate_limit: { unit: second, requests_per_unit: 0 }
  - key: user
    quota_mode: true
    detailed_metric: true
    value_to_metric: true
    rate_limit:
      name: per-user
      unit: day
      requests_per_unit: 100
      replaces: [{ name: global }]
"#,
    )
    .unwrap();
    let blocked = config
        .limit_for("d", &[Entry::new("remote_address", "50.0.0.5")])
        .unwrap();
    assert!(blocked.rate_limit.admits_nothing());
    let user = config.limit_for("d", &[Entry::new("user", "u")]).unwrap();
    assert!(user.quota_mode);
    assert_eq!(user.rate_limit.replaces, ["global"]);
    assert_eq!(user.rate_limit.name.as_deref(), Some("per-user"));
}

#[test]
fn files_of_one_domain_merge_only_when_asked() {
    let texts = vec![
            (
                PathBuf::from("a.yaml"),
                "domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1 }\n".to_string(),
            ),
            (
                PathBuf::from("b.yaml"),
                "domain: d\ndescriptors:\n  - key: b\n    rate_limit: { unit: second, requests_per_unit: 2 }\n".to_string(),
            ),
        ];
    match Config::from_texts_merging(&texts, false) {
        Err(ConfigError::Conflict { file, message }) => {
            assert_eq!(file, "b.yaml");
            assert!(message.contains("a.yaml"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let merged = Config::from_texts_merging(&texts, true).unwrap();
    assert_eq!(limit_of(&merged, &[("a", "x")]), Some(1));
    assert_eq!(limit_of(&merged, &[("b", "x")]), Some(2));
    assert_eq!(
        merged
            .limit_for("d", &[Entry::new("b", "x")])
            .unwrap()
            .field,
        "descriptors[0]"
    );
    let mut clash = texts.clone();
    clash[1].1 = clash[0].1.clone();
    match Config::from_texts_merging(&clash, true) {
        Err(ConfigError::Conflict { file, message }) => {
            assert_eq!(file, "b.yaml");
            assert!(message.contains("a.yaml: descriptors[0]"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_shipped_configuration_loads_with_its_features() {
    let config = Config::parse(
        "examples/config/ratelimit.yaml",
        include_str!("../../../config/ratelimit.yaml"),
    )
    .unwrap();
    let edge = |entries: &[(&str, &str)]| {
        let entries: Vec<Entry> = entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
        config.limit_for("edge", &entries).map(|m| {
            (
                m.rate_limit.requests_per_unit,
                m.rate_limit.admits_nothing(),
                m.bucket,
            )
        })
    };
    assert!(edge(&[("remote_address", "192.0.2.66")]).unwrap().1);
    let a = edge(&[("path", "/api/a/export")]).unwrap();
    let b = edge(&[("path", "/api/b/c/export")]).unwrap();
    assert_eq!((a.0, &a.2), (10, &b.2));
    assert_eq!(edge(&[("path", "/api/a/import")]), None);
}
