//! What the Redis tests share: where the servers are, and a Redis server of a test's own.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::Stdio;
use std::time::Duration;

use ratelimit_redis::RedisStore;

/// The standalone server `scripts/services.sh` starts (or `REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The cluster's seed nodes (or `REDIS_CLUSTER_NODES`, comma-separated).
pub fn cluster_nodes() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| {
            (7000..7006)
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .split(',')
        .map(str::to_string)
        .collect()
}

pub async fn standalone() -> RedisStore {
    RedisStore::connect(&redis_url())
        .await
        .expect("Redis on REDIS_URL is not reachable: run scripts/services.sh up")
}

pub async fn cluster() -> RedisStore {
    let nodes = cluster_nodes();
    let seeds: Vec<&str> = nodes.iter().map(String::as_str).collect();
    RedisStore::connect_cluster(&seeds)
        .await
        .expect("the Redis Cluster is not reachable: run scripts/services.sh up")
}

/// A `redis-server` of the test's own on `port`, so that the test may kill it.
pub struct OwnRedis {
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    pub async fn start(port: u16) -> Self {
        let mut server = OwnRedis { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn restart(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: run scripts/services.sh up");
        self.child = Some(child);
        for _ in 0..100 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Kills the server at once, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    pub async fn ping(&self) -> bool {
        redis_cli(self.port, &["ping"])
            .await
            .is_some_and(|out| out.trim() == "PONG")
    }
}

/// A command for `program` that closes every file descriptor above stderr first. A server a test
/// starts with `--daemonize yes` outlives the test, and would otherwise keep what the test
/// inherited: the machine-wide build lock that `flock` hands to cargo, and through it to the test,
/// would then stay held by a Redis node and stop every build on the machine.
pub fn without_inherited_fds(program: &str) -> std::process::Command {
    // bash, not sh: dash cannot name a descriptor above 9 in a redirection.
    let mut command = std::process::Command::new("bash");
    command.args([
        "-c",
        r#"for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && [ -e "/proc/$$/fd/$fd" ] && eval "exec $fd>&-"; done; exec "$0" "$@""#,
        program,
    ]);
    command
}

/// Runs `redis-cli -p port args…`; its output, or None when it failed.
pub async fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let output = tokio::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A TCP proxy in front of a server that can turn into a blackhole: it keeps accepting
/// connections and reading their bytes, forwards nothing either way, and never closes, as a NAT
/// that forgot its mappings or a failed-over virtual address does. Restored, it forwards new
/// connections again; the ones it held stay dead for good, so a client recovers only by
/// connecting anew.
pub struct Proxy {
    pub port: u16,
    shared: std::sync::Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    // Connections numbered below `cutoff` are dead; new ones are numbered from `next`.
    cutoff: std::sync::atomic::AtomicU64,
    next: std::sync::atomic::AtomicU64,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = std::sync::Arc::new(ProxyState {
            cutoff: std::sync::atomic::AtomicU64::new(0),
            next: std::sync::atomic::AtomicU64::new(0),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = state.next.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let dead = || id < state.cutoff.load(Ordering::SeqCst);
                    let _ = relay(client, upstream, dead).await;
                });
            }
        });
        Proxy { port, shared, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every connection, held and new, goes dead.
    pub fn blackhole(&self) {
        self.shared
            .cutoff
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    }

    /// New connections are forwarded again; the ones already held stay dead.
    pub fn restore(&self) {
        use std::sync::atomic::Ordering;
        // Numbers handed out from here on are live.
        let next = self.shared.next.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.cutoff.store(next, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays bytes between `client` and the upstream port while `dead()` is false; once it is true,
/// reads and drops what the client sends, forever.
async fn relay(
    mut client: tokio::net::TcpStream,
    upstream: u16,
    dead: impl Fn() -> bool,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = if dead() {
        None
    } else {
        Some(tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?)
    };
    let (mut from_client, mut from_server) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        match server.as_mut() {
            Some(upstream) if !dead() => {
                tokio::select! {
                    read = client.read(&mut from_client) => {
                        let n = read?;
                        if n == 0 { return Ok(()); }
                        if !dead() { upstream.write_all(&from_client[..n]).await?; }
                    }
                    read = upstream.read(&mut from_server) => {
                        let n = read?;
                        if n == 0 { return Ok(()); }
                        if !dead() { client.write_all(&from_server[..n]).await?; }
                    }
                    // Look at the switch now and then, so that a quiet connection goes dead too.
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            _ => {
                // The blackhole: the server's side is left unread and the client's is swallowed.
                let n = client.read(&mut from_client).await?;
                if n == 0 {
                    // Even a client that hangs up gets no close from here: wait forever.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}
