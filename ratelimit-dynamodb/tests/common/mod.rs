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
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Credentials;
use aws_smithy_http_client::tls;
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
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_config::defaults(BehaviorVersion::latest())
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
        .await;
    Client::new(&config)
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
