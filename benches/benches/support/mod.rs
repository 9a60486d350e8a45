//! What the benches that drive servers from many tasks share.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time for `tasks` tasks to make `iters` calls between them.
pub async fn concurrently<F, Fut>(tasks: u64, iters: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let call = call.clone();
            let share = iters / tasks + u64::from(t < iters % tasks);
            tokio::spawn(async move {
                for i in 0..share {
                    call(t * 1_000_000 + i).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}
