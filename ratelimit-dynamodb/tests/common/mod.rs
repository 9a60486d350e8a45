//! What the DynamoDB tests share: where the emulators are, clients for them, and an emulator of a
//! test's own.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, RuntimeComponents};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
use aws_smithy_types::body::SdkBody;
use ratelimit_dynamodb::{DynamoStore, create_table};

/// moto, as `scripts/services.sh` starts it (or `MOTO_ENDPOINT`).
pub fn moto_endpoint() -> String {
    std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5005".into())
}

/// dynalite, as `scripts/services.sh` starts it (or `DYNALITE_ENDPOINT`).
pub fn dynalite_endpoint() -> String {
    std::env::var("DYNALITE_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8005".into())
}

/// A client for `endpoint`, configured the way an application would be: through `aws-config`,
/// with the endpoint override an emulator needs and fixed test credentials.
pub async fn client(endpoint: &str) -> Client {
    Client::new(&sdk_config(endpoint).await)
}

/// A client for `endpoint` like [`client`], whose replies `lose` may drop after the server applied
/// the request.
pub async fn losing_client(endpoint: &str, lose: &LoseReplies) -> Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk_config(endpoint).await)
        .interceptor(lose.clone())
        .build();
    Client::from_conf(config)
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .region("us-east-1")
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .build(),
        )
        // One retry of transient errors, as the SDK would, but quick: tests stop emulators.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(20)),
        )
        .load()
        .await
}

/// A fault DynamoDB cannot be asked for: a reply lost on its way back after the server applied the
/// request. The interceptor swaps the real reply of a chosen request for a 500, which the SDK's
/// retry policy answers by sending the same request again, exactly as after a dropped connection.
///
/// A request is chosen by its operation and what its body contains, on its first attempt only (the
/// retry gets its real reply). The tests that use it send one request at a time on the client.
///
/// It can also run a step of the test just before a chosen request leaves (see [`before`]): another
/// replica's write landing between two of the store's requests, a race made to happen every time.
///
/// [`before`]: LoseReplies::before
#[derive(Clone, Default)]
pub struct LoseReplies {
    inner: Arc<LoseState>,
}

impl std::fmt::Debug for LoseReplies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoseReplies")
            .field("lost", &self.lost())
            .finish()
    }
}

/// A step run once before a chosen request is sent.
type Step = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct LoseState {
    rule: Mutex<Option<LoseRule>>,
    steps: Mutex<Vec<(LoseRule, Step)>>,
    // The attempt now in flight was chosen: its reply is to be lost.
    pending: AtomicBool,
    lost: AtomicUsize,
}

struct LoseRule {
    operation: String,
    contains: String,
    lacks: Option<String>,
    times: usize,
}

impl LoseReplies {
    /// Loses the first reply of the next `times` requests of `operation` (say `"UpdateItem"`) whose
    /// body contains `contains` and, if given, not `lacks`.
    pub fn arm(&self, operation: &str, contains: &str, lacks: Option<&str>, times: usize) {
        *self.inner.rule.lock().unwrap() = Some(LoseRule {
            operation: operation.to_string(),
            contains: contains.to_string(),
            lacks: lacks.map(str::to_string),
            times,
        });
    }

    /// Runs `step` (on a thread of its own, waiting for it) just before the next request of
    /// `operation` whose body contains `contains` and, if given, not `lacks`, is sent. Several
    /// steps may wait at once, each for its own request.
    pub fn before(
        &self,
        operation: &str,
        contains: &str,
        lacks: Option<&str>,
        step: impl FnOnce() + Send + 'static,
    ) {
        let rule = LoseRule {
            operation: operation.to_string(),
            contains: contains.to_string(),
            lacks: lacks.map(str::to_string),
            times: 1,
        };
        self.inner
            .steps
            .lock()
            .unwrap()
            .push((rule, Box::new(step)));
    }

    /// Stops losing replies and drops the steps that have not run.
    pub fn disarm(&self) {
        *self.inner.rule.lock().unwrap() = None;
        self.inner.steps.lock().unwrap().clear();
    }

    /// How many replies were lost so far.
    pub fn lost(&self) -> usize {
        self.inner.lost.load(Ordering::SeqCst)
    }
}

impl Intercept for LoseReplies {
    fn name(&self) -> &'static str {
        "LoseReplies"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let first_attempt = cfg.load::<RequestAttempts>().map(|a| a.attempts()) == Some(1);
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let body = request
            .body()
            .bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let matches = |rule: &LoseRule| {
            first_attempt
                && rule.times > 0
                && target.ends_with(&format!(".{}", rule.operation))
                && body.contains(&rule.contains)
                && rule
                    .lacks
                    .as_ref()
                    .is_none_or(|lacks| !body.contains(lacks))
        };
        let step = {
            let mut steps = self.inner.steps.lock().unwrap();
            let position = steps.iter().position(|(rule, _)| matches(rule));
            position.map(|i| steps.remove(i).1)
        };
        if let Some(step) = step {
            // The step may need a runtime of its own (it talks to the emulator): a thread keeps it
            // apart from the one this request runs on, which waits.
            std::thread::spawn(step).join().unwrap();
        }
        let mut rule = self.inner.rule.lock().unwrap();
        let chosen = rule.as_ref().is_some_and(matches);
        if chosen {
            if let Some(rule) = rule.as_mut() {
                rule.times -= 1;
            }
        }
        self.inner.pending.store(chosen, Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.inner.pending.swap(false, Ordering::SeqCst) {
            let mut lost = HttpResponse::new(
                StatusCode::try_from(500u16).unwrap(),
                SdkBody::from(
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"reply lost (injected by the test)"}"#,
                ),
            );
            lost.headers_mut()
                .insert("content-type", "application/x-amz-json-1.0");
            *context.response_mut() = lost;
            self.inner.lost.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// The table the shared tests use on every emulator.
pub const TABLE: &str = "ratelimit_tests";

/// A store on `endpoint`'s test table, creating the table when it is missing.
pub async fn store(endpoint: &str) -> DynamoStore {
    let client = client(endpoint).await;
    create_table(&client, TABLE).await.unwrap_or_else(|error| {
        panic!("no DynamoDB emulator at {endpoint} ({error}): run scripts/services.sh up")
    });
    DynamoStore::connect(client, TABLE).await.unwrap()
}

pub async fn moto() -> DynamoStore {
    store(&moto_endpoint()).await
}

pub async fn dynalite() -> DynamoStore {
    store(&dynalite_endpoint()).await
}

/// A dynalite of the test's own on `port`, so that the test may stop it.
pub struct OwnDynalite {
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnDynalite {
    pub async fn start(port: u16) -> Self {
        let mut server = OwnDynalite { port, child: None };
        server.restart().await;
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the emulator (again, empty) and waits until it accepts connections.
    pub async fn restart(&mut self) {
        let dir = std::env::var("RATELIMIT_SERVICES_DIR")
            .unwrap_or_else(|_| "/tmp/ratelimit-services".into());
        let cli = format!("{dir}/dynalite/node_modules/dynalite/cli.js");
        assert!(
            std::path::Path::new(&cli).exists(),
            "{cli} is missing: run scripts/services.sh up"
        );
        let child = tokio::process::Command::new("node")
            .args([
                cli.as_str(),
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--createTableMs",
                "0",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node is not installed: run scripts/services.sh up");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dynalite on port {} did not start", self.port);
    }

    /// Kills the emulator at once, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// Runs `work` to completion on a runtime of its own: for test steps run from inside the SDK (see
/// [`LoseReplies::before`]), which cannot await.
pub fn block_on<F: std::future::Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}
