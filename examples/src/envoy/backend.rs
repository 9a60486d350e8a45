//! Connecting to the store the settings name: the memory store, one Redis, a Redis Cluster, the
//! master a set of Redis Sentinels names, or a DynamoDB table.

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{MemoryStore, Store, StoreError};
use ratelimit_redis::RedisStore;
use thiserror::Error;

use super::settings::{Backend, tcp_url};

/// Why the store could not be reached at start.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The store refused or could not be reached.
    #[error("{what}: {source}")]
    Store {
        /// Which store.
        what: String,
        /// Why.
        source: StoreError,
    },
    /// No Sentinel named a master.
    #[error("no Sentinel of {sentinels:?} names a master {master:?}: {reasons}")]
    NoMaster {
        /// The master's name.
        master: String,
        /// The Sentinels asked.
        sentinels: Vec<String>,
        /// What each one answered.
        reasons: String,
    },
}

/// How long one Sentinel may take to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to `backend`. `prefix` (`CACHE_KEY_PREFIX`) goes before every Redis key; the other
/// stores keep their own names.
pub async fn connect(
    backend: &Backend,
    prefix: Option<&str>,
) -> Result<Arc<dyn Store>, BackendError> {
    let failed = |what: &str| {
        let what = what.to_string();
        move |source| BackendError::Store { what, source }
    };
    let redis = |store: RedisStore, what: &str| -> Result<Arc<dyn Store>, BackendError> {
        Ok(Arc::new(match prefix {
            Some(prefix) => store.with_prefix(prefix).map_err(failed(what))?,
            None => store,
        }))
    };
    match backend {
        Backend::Memory => Ok(Arc::new(MemoryStore::new())),
        Backend::Redis(url) => {
            let what = format!("Redis at {}", redact(url));
            redis(
                RedisStore::connect(url).await.map_err(failed(&what))?,
                &what,
            )
        }
        Backend::RedisCluster(urls) => {
            let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
            let what = format!("Redis Cluster through {}", redact(&urls.join(",")));
            let store = RedisStore::connect_cluster(&nodes)
                .await
                .map_err(failed(&what))?;
            redis(store, &what)
        }
        Backend::RedisSentinel {
            master,
            sentinels,
            auth,
            tls,
        } => {
            let address = sentinel_master(master, sentinels).await?;
            tracing::info!(%master, %address, "the Sentinels name this master");
            let url = tcp_url(&address, auth.as_deref(), *tls);
            let what = format!("Redis master {master:?} at {address}");
            redis(
                RedisStore::connect(&url).await.map_err(failed(&what))?,
                &what,
            )
        }
        Backend::Dynamodb(table) => {
            let what = format!("DynamoDB table {table:?}");
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https();
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(http)
                .load()
                .await;
            let client = aws_sdk_dynamodb::Client::new(&config);
            ratelimit_dynamodb::create_table(&client, table)
                .await
                .map_err(failed(&what))?;
            let store = ratelimit_dynamodb::DynamoStore::connect(client, table.clone())
                .await
                .map_err(failed(&what))?;
            Ok(Arc::new(store))
        }
    }
}

/// The `host:port` of the master named `master`, from the first Sentinel that knows it
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`). The master is found once, at start: after a failover
/// the old master refuses writes, the store's calls fail, the failure policy decides, and a
/// restart (Kubernetes restarts a replica whose readiness it is told to watch) finds the new
/// one.
pub async fn sentinel_master(master: &str, sentinels: &[String]) -> Result<String, BackendError> {
    let mut reasons = Vec::new();
    for sentinel in sentinels {
        match ask_sentinel(sentinel, master).await {
            Ok(Some((host, port))) => return Ok(format!("{host}:{port}")),
            Ok(None) => reasons.push(format!("{}: no such master", redact(sentinel))),
            Err(error) => reasons.push(format!("{}: {error}", redact(sentinel))),
        }
    }
    Err(BackendError::NoMaster {
        master: master.to_string(),
        sentinels: sentinels.iter().map(|s| redact(s)).collect(),
        reasons: reasons.join("; "),
    })
}

async fn ask_sentinel(sentinel: &str, master: &str) -> Result<Option<(String, u16)>, String> {
    let ask = async {
        let client = redis::Client::open(sentinel).map_err(|e| e.to_string())?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(master)
            .query_async::<Option<(String, u16)>>(&mut connection)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(SENTINEL_TIMEOUT, ask)
        .await
        .map_err(|_| format!("no answer within {SENTINEL_TIMEOUT:?}"))?
}

/// A URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("redis://u:secret@host:6379"),
            "redis://***@host:6379"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
