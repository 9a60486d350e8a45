//! Watch a limiter decide: three clients share an API for three seconds.
//!
//! `polite` stays under its limit, `greedy` sends five times too much, `bursty` sends 25 at once
//! every second; all of them also count against one global limit. Every half second the example prints what each client
//! sent, what got through, and the headers a client would see.
//!
//! Run it with `cargo run -p ratelimit-core --example decisions`.

use std::time::{Duration, Instant};

use ratelimit_core::{Limit, MemoryStore, Policy, PolicyError, Store};

struct Client {
    name: &'static str,
    per_tick: u32,
    burst_every: u32,
    sent: u32,
    admitted: u32,
    last: Option<(bool, u32, Duration)>,
}

fn main() -> Result<(), PolicyError> {
    let per_client = Policy::per_second(20)?.with_burst(10)?;
    let global = Policy::per_second(40)?;
    let store = MemoryStore::new();
    let mut clients = [
        Client::new("polite", 1, 10),   // 10 a second: under its limit
        Client::new("greedy", 1, 1),    // 100 a second: five times its limit
        Client::new("bursty", 25, 100), // 25 at once, once a second
    ];
    println!("policies: per client {per_client:?}\n          global {global:?}\n");
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    for step in 1..=300u32 {
        for client in clients.iter_mut() {
            if step % client.burst_every != 0 {
                continue;
            }
            let key = format!("client:{}", client.name);
            for _ in 0..client.per_tick {
                let limits = [Limit::new(&key, per_client), Limit::new("global", global)];
                // In process, the store answers without a future: always `Some`.
                match store.acquire_sync(&limits) {
                    None => eprintln!("{}: the store must be awaited", client.name),
                    Some(Ok(verdict)) => {
                        client.sent += 1;
                        client.admitted += u32::from(verdict.is_allowed());
                        if let Some(d) = verdict.decision() {
                            client.last = Some((d.is_allowed(), d.remaining(), d.retry_after()));
                        }
                    }
                    Some(Err(error)) => eprintln!("{}: refused: {error}", client.name),
                }
            }
        }
        if step % 50 == 0 {
            println!("after {:>4} ms", start.elapsed().as_millis());
            for client in &clients {
                let (allowed, remaining, retry) = client.last.unwrap_or((true, 0, Duration::ZERO));
                println!(
                    "  {:<7} sent {:>4}  admitted {:>4}  limited {:>4}   last: {:<7} RateLimit: remaining={remaining}{}",
                    client.name,
                    client.sent,
                    client.admitted,
                    client.sent - client.admitted,
                    if allowed { "allowed" } else { "429" },
                    if allowed {
                        String::new()
                    } else {
                        format!(
                            ", Retry-After: {}s (exactly {retry:?})",
                            retry.as_secs().max(1)
                        )
                    },
                );
            }
        }
        std::thread::sleep(tick.saturating_sub(start.elapsed().saturating_sub(tick * step)));
    }
    let total: u32 = clients.iter().map(|c| c.admitted).sum();
    let elapsed = start.elapsed();
    println!(
        "\nglobal: {total} admitted in {elapsed:.2?}; the bound (burst + rate x time) is {}",
        global.max_admitted(elapsed)
    );
    Ok(())
}

impl Client {
    fn new(name: &'static str, per_tick: u32, burst_every: u32) -> Self {
        Client {
            name,
            per_tick,
            burst_every,
            sent: 0,
            admitted: 0,
            last: None,
        }
    }
}
