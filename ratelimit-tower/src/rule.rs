//! Rules: which requests a limit applies to, how it keys them, and what they cost.

use std::sync::Arc;

use compact_str::CompactString;

use http::header::HeaderName;
use http::{Method, StatusCode};
use ratelimit_core::{Policy, PolicyCell};

use crate::key::{KeyExtractor, RequestView};

/// What a rule does with a request whose key cannot be extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// Count every such request under one shared key of the rule (the default): leaving out an API
    /// key or sending a malformed header never escapes the limit, it only joins everyone else who did.
    #[default]
    SharedBucket,
    /// Let the request through unchecked by this rule.
    Skip,
    /// Answer with this status at once (say 400 or 401).
    Reject(StatusCode),
}

/// Which requests a rule applies to. Every condition set must hold; an empty matcher matches all.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    path: Option<PathPattern>,
    methods: Vec<Method>,
    host: Option<String>,
    header: Option<HeaderName>,
    when: Option<Condition>,
}

/// A condition of the application's own, for [`Matcher::when`].
#[derive(Clone)]
struct Condition(Arc<dyn Fn(&RequestView<'_>) -> bool + Send + Sync>);

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condition(..)")
    }
}

impl Matcher {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Requests whose path matches `pattern`: literal segments, `{name}` for any one segment, and
    /// a final `*` for any rest, none included (`/api/*` matches `/api`, `/api/v1/users`).
    pub fn path(pattern: &str) -> Self {
        Matcher {
            path: Some(PathPattern::new(pattern)),
            ..Self::default()
        }
    }

    /// gRPC calls of one method (`"grpc.health.v1.Health/Check"`) or of every method of a service
    /// (`"grpc.health.v1.Health/*"`).
    pub fn grpc_method(method: &str) -> Self {
        Self::path(&format!("/{}", method.trim_start_matches('/')))
    }

    /// Also requires one of these methods.
    pub fn method(mut self, method: Method) -> Self {
        self.methods.push(method);
        self
    }

    /// Also requires this host (without port, compared case-insensitively).
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_ascii_lowercase());
        self
    }

    /// Also requires this header to be present.
    pub fn with_header(mut self, header: HeaderName) -> Self {
        self.header = Some(header);
        self
    }

    /// Also requires `condition` to hold, asked last and before any key is extracted: a rule
    /// switched off this way passes requests without a word, where an extractor that finds no key
    /// would count and report each one as keyless.
    pub fn when(
        mut self,
        condition: impl Fn(&RequestView<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.when = Some(Condition(Arc::new(condition)));
        self
    }

    /// Whether the request matches.
    pub fn matches(&self, request: &RequestView<'_>) -> bool {
        self.path
            .as_ref()
            .is_none_or(|p| p.matches(request.uri.path()))
            && (self.methods.is_empty() || self.methods.contains(request.method))
            && self
                .host
                .as_ref()
                .is_none_or(|h| request.host().is_some_and(|rh| rh.eq_ignore_ascii_case(h)))
            && self
                .header
                .as_ref()
                .is_none_or(|h| request.headers.contains_key(h))
            && self.when.as_ref().is_none_or(|c| (c.0)(request))
    }
}

#[derive(Debug, Clone)]
struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
    Rest,
}

impl PathPattern {
    fn new(pattern: &str) -> Self {
        let segments = pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "*" => Segment::Rest,
                s if s.starts_with('{') && s.ends_with('}') => Segment::Any,
                s => Segment::Literal(s.to_string()),
            })
            .collect();
        PathPattern { segments }
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/').filter(|s| !s.is_empty());
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::Any => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(literal) => {
                    if parts.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// One limit of a layer: a name, the requests it applies to, how it keys them, its policy and cost.
///
/// ```
/// use ratelimit_core::Policy;
/// use ratelimit_tower::{KeyExtractor, Matcher, Rule};
///
/// let login = Rule::new("login", KeyExtractor::PeerIp, Policy::per_minute(10)?)
///     .matching(Matcher::path("/login").method(http::Method::POST));
/// let everyone = Rule::new("global", KeyExtractor::Global, Policy::per_second(10_000)?).shadow(true);
/// # Ok::<(), ratelimit_core::PolicyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    // `name|`, the start of every store key of this rule: cloning it (inline up to 24 bytes) is
    // cheaper on each request than writing the name and the separator again.
    pub(crate) key_prefix: CompactString,
    pub(crate) matcher: Matcher,
    pub(crate) key: KeyExtractor,
    pub(crate) policy: Arc<PolicyCell>,
    pub(crate) cost: u32,
    pub(crate) shadow: bool,
    pub(crate) missing_key: MissingKey,
}

impl Rule {
    /// A rule that applies to every request, at cost 1. The name appears in response headers and
    /// metrics: letters, digits and `-_.:/` only (checked when the layer is built).
    pub fn new(name: &str, key: KeyExtractor, policy: Policy) -> Self {
        let mut key_prefix = CompactString::with_capacity(name.len() + 16);
        key_prefix.push_str(name);
        key_prefix.push('|');
        Rule {
            name: Arc::from(name),
            key_prefix,
            matcher: Matcher::any(),
            key,
            policy: Arc::new(PolicyCell::new(policy)),
            cost: 1,
            shadow: false,
            missing_key: MissingKey::default(),
        }
    }

    /// Applies the rule only to requests `matcher` matches.
    pub fn matching(mut self, matcher: Matcher) -> Self {
        self.matcher = matcher;
        self
    }

    /// What each request costs under this rule (default 1).
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }

    /// Shadow mode: decide and count, but let every request through.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// What to do with requests whose key cannot be extracted.
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        self.missing_key = missing;
        self
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's policy now.
    pub fn policy(&self) -> Policy {
        self.policy.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_is_asked_last_and_decides() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let request = http::Request::get("/a").body(()).unwrap_or_default();
        let view = RequestView::of(&request);
        assert!(Matcher::any().when(|r| r.uri.path() == "/a").matches(&view));
        assert!(!Matcher::any().when(|_| false).matches(&view));
        let asked = Arc::new(AtomicBool::new(false));
        let flag = asked.clone();
        let matcher = Matcher::path("/b").when(move |_| {
            flag.store(true, Ordering::Relaxed);
            true
        });
        assert!(!matcher.matches(&view));
        assert!(
            !asked.load(Ordering::Relaxed),
            "asked though the path did not match"
        );
    }

    #[test]
    fn path_patterns() {
        let p = |pattern: &str, path: &str| PathPattern::new(pattern).matches(path);
        assert!(p("/api/*", "/api"));
        assert!(p("/api/*", "/api/v1/users"));
        assert!(!p("/api/*", "/apis"));
        assert!(p("/users/{id}", "/users/42"));
        assert!(!p("/users/{id}", "/users"));
        assert!(!p("/users/{id}", "/users/42/posts"));
        assert!(p("/login", "/login/"));
        assert!(p("/*", "/anything/at/all"));
        assert!(p(
            "/grpc.health.v1.Health/*",
            "/grpc.health.v1.Health/Check"
        ));
    }
}
