//! Property tests of what a client or an operator controls: the descriptor YAML, and every field
//! of a `RateLimitRequest` sent over gRPC to the service. Plus a replay of the committed corpus
//! of interesting inputs under `tests/corpus/<target>/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::google::protobuf::UInt64Value;
use proptest::prelude::*;
use ratelimit_core::{Limiter, MemoryStore, Policy};
use ratelimit_examples::envoy::config::{Config, ConfigError};
use tonic::transport::Channel;

const VALID: &str = r#"domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: hour, requests_per_unit: 10 }
  - key: route
    value: /login
    rate_limit: { unit: minute, requests_per_unit: 3 }
    shadow_mode: true
  - key: t
    rate_limit: { unit: hour, requests_per_unit: 100 }
    descriptors:
      - key: sub
        rate_limit: { unit: hour, requests_per_unit: 2 }
  - key: open
    rate_limit: { unlimited: true }
"#;

/// Lines as the YAML scanner counts them: it breaks at `\r\n`, `\n` and a lone `\r`, and (YAML
/// 1.1, as libyaml) at NEL, LS and PS, where `str::lines` breaks at `\n` only.
fn yaml_lines(text: &str) -> usize {
    let breaks = text
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    breaks + 1
}

#[test]
fn lines_are_counted_as_the_yaml_scanner_counts_them() {
    // Found by the property below: `"\r¡\r` is an error on line 3 of what `lines()` calls one.
    check_parse("cr.yaml", "\"\r\u{a1}\r");
    assert_eq!(yaml_lines("a\r\nb\rc\nd"), 4);
}

/// A parse's outcome is a configuration or a typed error naming the file, with a line inside
/// the text (0 only when the parser knows no location).
fn check_parse(name: &str, text: &str) {
    match Config::parse(name, text) {
        Ok(_) => {}
        Err(ConfigError::Invalid { file, line, .. }) => {
            assert_eq!(file, name);
            let lines = yaml_lines(text);
            assert!(line <= lines + 1, "line {line} of a {lines}-line text");
        }
        Err(ConfigError::Conflict { file, .. } | ConfigError::Unrepresentable { file, .. }) => {
            assert_eq!(file, name);
        }
        Err(ConfigError::Io { .. }) => panic!("parsing text read a file"),
    }
}

/// One edit of a valid configuration.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let any_text = prop_oneof![
        "[ \\t\\n:{}\\[\\]&*!|>#'\",-]{1,6}",
        "[a-z_]{1,12}",
        "-?[0-9]{1,25}",
        ".{1,8}"
    ];
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), any_text).prop_map(|(at, s)| Mutation::Insert(at, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| if chars.is_empty() { 0 } else { i % chars.len() };
    match mutation {
        Mutation::Delete(i, n) => {
            let start = at(*i);
            let end = (start + n).min(chars.len());
            chars[..start].iter().chain(&chars[end..]).collect()
        }
        Mutation::Insert(i, s) => {
            let start = at(*i);
            let mut out: String = chars[..start].iter().collect();
            out.push_str(s);
            out.extend(&chars[start..]);
            out
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return text.to_string();
            }
            let (a, b) = (a % lines.len(), b % lines.len());
            lines.swap(a, b);
            lines.join("\n")
        }
        Mutation::Truncate(i) => chars[..at(*i)].iter().collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the parser; its errors are typed, with the file.
    #[test]
    fn arbitrary_text_gives_a_config_or_a_typed_error(text in "(.|\n){0,400}") {
        check_parse("any.yaml", &text);
    }

    /// Valid configurations, edited at random, never panic the parser either.
    #[test]
    fn mutated_configs_give_a_config_or_a_typed_error(
        mutations in proptest::collection::vec(mutation(), 1..6)
    ) {
        let text = mutations.iter().fold(VALID.to_string(), |t, m| apply(&t, m));
        check_parse("mutated.yaml", &text);
    }
}

/// A runtime and the service in it, over gRPC on loopback: one per property, shared by its
/// cases.
fn service() -> (tokio::runtime::Runtime, RateLimitServiceClient<Channel>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(support::serve(VALID, Limiter::new(MemoryStore::new())));
    (runtime, client)
}

fn entry_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("remote_address".to_string()),
        Just("route".to_string()),
        Just("t".to_string()),
        Just("sub".to_string()),
        Just("open".to_string()),
        ".{0,6}",
    ]
}

fn entry_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,12}",
        1 => Just("/login".to_string()),
        1 => Just("t|sub=s".to_string()),
        1 => (0..3000usize).prop_map(|n| "v".repeat(n)),
    ]
}

fn hits() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..12u64,
        Just(u64::from(u32::MAX)),
        Just((1u64 << 32) + 5),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn request_descriptor() -> impl Strategy<Value = RateLimitDescriptor> {
    (
        proptest::collection::vec((entry_key(), entry_value()), 0..4),
        proptest::option::of(hits()),
    )
        .prop_map(|(entries, hits)| RateLimitDescriptor {
            entries: entries
                .into_iter()
                .map(|(key, value)| Entry { key, value })
                .collect(),
            hits_addend: hits.map(|value| UInt64Value { value }),
            ..RateLimitDescriptor::default()
        })
}

fn request() -> impl Strategy<Value = RateLimitRequest> {
    (
        prop_oneof![Just("edge".to_string()), Just(String::new()), ".{0,8}"],
        proptest::collection::vec(request_descriptor(), 0..40),
        prop_oneof![0..4u32, Just(u32::MAX), any::<u32>()],
    )
        .prop_map(|(domain, descriptors, hits_addend)| RateLimitRequest {
            domain,
            descriptors,
            hits_addend,
        })
}

/// What the service must answer: `Err` only for a request that names nothing to decide.
fn must_be_refused(request: &RateLimitRequest) -> bool {
    request.domain.is_empty()
        || request.descriptors.is_empty()
        || request.descriptors.iter().any(|d| d.entries.is_empty())
}

fn check_answer(
    request: &RateLimitRequest,
    answer: Result<
        tonic::Response<envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse>,
        tonic::Status,
    >,
) -> Result<(), TestCaseError> {
    match answer {
        Ok(response) => {
            let response = response.into_inner();
            prop_assert!(!must_be_refused(request), "decided an empty request");
            prop_assert!(
                response.overall_code == Code::Ok as i32
                    || response.overall_code == Code::OverLimit as i32,
                "overall code {}",
                response.overall_code
            );
            prop_assert_eq!(response.statuses.len(), request.descriptors.len());
        }
        Err(status) => {
            prop_assert!(
                must_be_refused(request),
                "an error Envoy would admit: {status}"
            );
            prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
    Ok(())
}

#[test]
fn every_request_is_ok_or_over_limit_unless_it_names_nothing() {
    let (runtime, client) = service();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    runner
        .run(&request(), |request| {
            let mut client = client.clone();
            let answer = runtime.block_on(client.should_rate_limit(request.clone()));
            check_answer(&request, answer)
        })
        .unwrap();
}

/// The victim's key, one per case so that cases do not share a bucket.
static CASE: AtomicU64 = AtomicU64::new(0);

/// One request of a hammering client: the victim's descriptor `repeats` times, with a cost,
/// among noise (other keys, values that spell the victim's with separators).
fn hammer() -> impl Strategy<Value = (u32, Vec<Option<u64>>, Vec<(String, String)>)> {
    (
        prop_oneof![0..4u32, Just(u32::MAX), any::<u32>()],
        proptest::collection::vec(proptest::option::of(hits()), 1..4),
        proptest::collection::vec(
            prop_oneof![
                (entry_key(), entry_value()),
                Just(("remote_address".to_string(), "VICTIM|x".to_string())),
                Just(("remote_address".to_string(), "VICTIM ".to_string())),
            ],
            0..24,
        ),
    )
}

#[test]
fn a_hammered_key_never_admits_more_than_its_bound() {
    let (runtime, client) = service();
    // remote_address: 10 an hour, all of it at once.
    let policy = Policy::new(10, std::time::Duration::from_secs(3600)).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(hammer(), 1..40), |requests| {
            let victim = format!("victim-{}", CASE.fetch_add(1, Ordering::Relaxed));
            let start = Instant::now();
            let mut admitted: u64 = 0;
            for (request_hits, repeats, noise) in requests {
                let mut descriptors: Vec<RateLimitDescriptor> = noise
                    .into_iter()
                    .map(|(key, value)| RateLimitDescriptor {
                        entries: vec![Entry {
                            key,
                            value: value.replace("VICTIM", &victim),
                        }],
                        ..RateLimitDescriptor::default()
                    })
                    .collect();
                // What this request costs the victim's bucket if it is admitted.
                let mut cost: u64 = 0;
                for (i, hits) in repeats.iter().enumerate() {
                    // A descriptor's own 0 only checks; the request's 0 means 1.
                    cost = cost.saturating_add(hits.unwrap_or(u64::from(request_hits.max(1))));
                    let at = (i * 7) % (descriptors.len() + 1);
                    descriptors.insert(
                        at,
                        RateLimitDescriptor {
                            entries: vec![Entry {
                                key: "remote_address".into(),
                                value: victim.clone(),
                            }],
                            hits_addend: hits.map(|value| UInt64Value { value }),
                            ..RateLimitDescriptor::default()
                        },
                    );
                }
                let mut client = client.clone();
                let answer = runtime
                    .block_on(client.should_rate_limit(RateLimitRequest {
                        domain: "edge".into(),
                        descriptors,
                        hits_addend: request_hits,
                    }))
                    .map_err(|status| TestCaseError::fail(format!("an error: {status}")))?
                    .into_inner();
                if answer.overall_code == Code::Ok as i32 {
                    admitted = admitted.saturating_add(cost);
                }
            }
            let bound = policy.max_admitted(start.elapsed());
            prop_assert!(
                admitted <= bound,
                "{} admitted {} against a bound of {}",
                victim,
                admitted,
                bound
            );
            Ok(())
        })
        .unwrap();
}

/// A value in a corpus request: a string, or a string repeated (for long values).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CorpusValue {
    Text(String),
    Repeat { repeat: (String, usize) },
}

#[derive(serde::Deserialize)]
struct CorpusDescriptor {
    #[serde(default)]
    hits_addend: Option<u64>,
    entries: Vec<(String, CorpusValue)>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CorpusDescriptors {
    List(Vec<CorpusDescriptor>),
    /// This many descriptors of distinct `remote_address` values.
    Many {
        many: usize,
    },
}

#[derive(serde::Deserialize)]
struct CorpusRequest {
    domain: String,
    #[serde(default)]
    hits_addend: u32,
    descriptors: CorpusDescriptors,
    /// `ok`, `over_limit` or `invalid_argument`.
    expect: String,
}

impl CorpusRequest {
    fn request(&self, name: &str) -> RateLimitRequest {
        let descriptors = match &self.descriptors {
            CorpusDescriptors::List(list) => list
                .iter()
                .map(|d| RateLimitDescriptor {
                    entries: d
                        .entries
                        .iter()
                        .map(|(key, value)| Entry {
                            key: key.clone(),
                            value: match value {
                                CorpusValue::Text(text) => text.clone(),
                                CorpusValue::Repeat { repeat: (s, n) } => s.repeat(*n),
                            },
                        })
                        .collect(),
                    hits_addend: d.hits_addend.map(|value| UInt64Value { value }),
                    ..RateLimitDescriptor::default()
                })
                .collect(),
            CorpusDescriptors::Many { many } => (0..*many)
                .map(|i| RateLimitDescriptor {
                    entries: vec![Entry {
                        key: "remote_address".into(),
                        value: format!("{name}-{i}"),
                    }],
                    ..RateLimitDescriptor::default()
                })
                .collect(),
        };
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: self.hits_addend,
        }
    }
}

fn corpus(target: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Some inputs are not UTF-8 on purpose; the parser sees what a file read gives.
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            (name, text)
        })
        .collect()
}

#[test]
fn the_yaml_corpus_parses_or_is_refused_with_its_file() {
    for (name, text) in corpus("descriptors_yaml") {
        check_parse(&name, &text);
    }
    // The valid ones are valid.
    for (name, text) in corpus("descriptors_yaml") {
        if name.starts_with("valid_") {
            assert!(Config::parse(&name, &text).is_ok(), "{name}");
        }
    }
}

#[test]
fn the_request_corpus_gets_its_answers() {
    let (runtime, client) = service();
    for (name, text) in corpus("rls_request") {
        let case: CorpusRequest = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("corpus file {name} does not parse: {e}"));
        let request = case.request(&name);
        let mut client = client.clone();
        let answer = runtime.block_on(client.should_rate_limit(request.clone()));
        let got = match &answer {
            Ok(r) if r.get_ref().overall_code == Code::Ok as i32 => "ok".to_string(),
            Ok(r) if r.get_ref().overall_code == Code::OverLimit as i32 => "over_limit".into(),
            Ok(r) => format!("code {}", r.get_ref().overall_code),
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                "invalid_argument".into()
            }
            Err(status) => format!("error {status}"),
        };
        assert_eq!(got, case.expect, "{name}");
        check_answer(&request, answer).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
