//! One key's lease on a replica: its tokens, its state (idle, fetching, dead) and the right to
//! fetch the next lease.
//!
//! Apart from the table because this is where the bound is kept: a lease's tokens are zeroed
//! before the next is asked for, and only one task fetches at a time.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::policy::Policy;

/// What [`Slot::spend`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Spent from the lease; this many tokens are left in it.
    Spent(u64),
    /// The store denied this slot's last lease: denied here until this clock reading.
    Denied(u64),
    /// No live lease with enough tokens under this policy.
    Empty,
}

const IDLE: u8 = 0;
const FETCHING: u8 = 1;
const DEAD: u8 = 2;

/// One key's lease on this replica.
pub(crate) struct Slot {
    /// Tokens left in the current lease.
    tokens: AtomicU64,
    /// Clock reading at which the current lease expires.
    expires_at: AtomicU64,
    /// The policy the lease was taken under (emission interval and burst): a request under
    /// another policy does not spend it.
    interval_ns: AtomicU64,
    burst: AtomicU32,
    /// Until when the store's denial of the last lease holds (0: none).
    denied_until: AtomicU64,
    /// IDLE, FETCHING (one task is asking the store for a lease) or DEAD (evicted).
    state: AtomicU8,
    /// The rate estimate: cost seen since `window_start`, and in the window before.
    window_start: AtomicU64,
    window_cost: AtomicU64,
    last_window_cost: AtomicU64,
    /// Wakes the tasks waiting for a fetch in flight.
    notify: Notify,
}

impl Slot {
    pub(super) fn new(now: u64) -> Self {
        Slot {
            tokens: AtomicU64::new(0),
            expires_at: AtomicU64::new(0),
            interval_ns: AtomicU64::new(0),
            burst: AtomicU32::new(0),
            denied_until: AtomicU64::new(0),
            state: AtomicU8::new(IDLE),
            window_start: AtomicU64::new(now),
            window_cost: AtomicU64::new(0),
            last_window_cost: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// Counts a decision of `cost` at `now` and returns the key's estimated cost per window of
    /// `window_ns`: the larger of the last whole window and the current one so far, so a key that
    /// turns busy is leased within its first window, and an idle key never is.
    ///
    /// Relaxed throughout: an estimate, read by nothing that needs it exact; a lost update
    /// between two racing window rolls only misestimates one window.
    pub(crate) fn observe(&self, cost: u32, now: u64, window_ns: u64) -> u64 {
        let start = self.window_start.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(start);
        if elapsed >= window_ns
            && self
                .window_start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let finished = self.window_cost.swap(0, Ordering::Relaxed);
            // A gap of a whole window with no decision means the key was idle.
            let last = if elapsed >= window_ns.saturating_mul(2) {
                0
            } else {
                finished
            };
            self.last_window_cost.store(last, Ordering::Relaxed);
        }
        let current = self
            .window_cost
            .fetch_add(u64::from(cost), Ordering::Relaxed)
            .saturating_add(u64::from(cost));
        current.max(self.last_window_cost.load(Ordering::Relaxed))
    }

    /// Spends `cost` tokens of the live lease taken under `policy`, if it has them.
    pub(crate) fn spend(&self, cost: u32, policy: &Policy, now: u64) -> Spend {
        let denied_until = self.denied_until.load(Ordering::Relaxed);
        if now < denied_until {
            return Spend::Denied(denied_until);
        }
        let cost = u64::from(cost);
        // Acquire on the load and on the compare-and-swap pairs with the Release store of
        // `install`: having seen a lease's tokens, this task also sees that lease's expiry and
        // policy, not an older lease's. The bound itself needs only the atomicity of the
        // compare-and-swap: every read-modify-write sees the latest value in the word's
        // modification order, so two tasks never spend the same token, and a lease replaced or
        // evicted meanwhile (the word set to the new lease's count or to zero) fails the exchange
        // and is decided again from what the word holds now.
        let mut tokens = self.tokens.load(Ordering::Acquire);
        loop {
            if tokens < cost
                || now >= self.expires_at.load(Ordering::Relaxed)
                || self.interval_ns.load(Ordering::Relaxed) != policy.emission_interval_ns()
                || self.burst.load(Ordering::Relaxed) != policy.burst()
            {
                return Spend::Empty;
            }
            match self.tokens.compare_exchange_weak(
                tokens,
                tokens - cost,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Spend::Spent(tokens - cost),
                Err(current) => tokens = current,
            }
        }
    }

    /// Claims the right to fetch the next lease, if no other task of this replica holds it; the
    /// tokens left of the current lease are dropped first, so that this replica never holds two
    /// leases with tokens to spend (the bound's premise).
    ///
    /// Acquire on success pairs with the Release of the previous fetch's end: this task sees
    /// what that fetch installed.
    pub(crate) fn claim(&self) -> Option<Fetch<'_>> {
        self.state
            .compare_exchange(IDLE, FETCHING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // Before the store is asked: a lease's tokens are all spent before the store grants
        // the next one.
        self.tokens.store(0, Ordering::Relaxed);
        Some(Fetch { slot: self })
    }

    /// Nanoseconds until the current lease expires (0 if it has).
    pub(crate) fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.load(Ordering::Relaxed).saturating_sub(now)
    }

    /// Whether a fetch is in flight (waiting for it is worth it).
    pub(crate) fn is_fetching(&self) -> bool {
        self.state.load(Ordering::Acquire) == FETCHING
    }

    /// Whether the slot was evicted (its key must take the exact path from here).
    pub(crate) fn is_dead(&self) -> bool {
        self.state.load(Ordering::Acquire) == DEAD
    }

    /// Waits until the fetch in flight ends, or `deadline` passes. Registers before it looks at
    /// the state, so a fetch that ends in between is not missed.
    pub(crate) async fn wait_for_fetch(&self, deadline: Duration) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.is_fetching() {
            let _ = tokio::time::timeout(deadline, notified).await;
        }
    }

    /// Evicts the slot if no fetch is in flight: IDLE → DEAD, tokens zeroed, so a task still
    /// holding it spends nothing and takes the exact path.
    pub(crate) fn evict(&self) -> bool {
        if self
            .state
            .compare_exchange(IDLE, DEAD, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.tokens.store(0, Ordering::Release);
        self.notify.notify_waiters();
        true
    }

    /// Whether an idle slot has seen no decision for two windows: its lease, taken at some
    /// decision, has then expired, so forgetting it loses nothing.
    pub(super) fn is_stale(&self, now: u64, window_ns: u64) -> bool {
        self.state.load(Ordering::Relaxed) == IDLE
            && now
                >= self
                    .window_start
                    .load(Ordering::Relaxed)
                    .saturating_add(window_ns.saturating_mul(2))
    }
}

/// The right to fetch a slot's next lease, held by one task; dropping it (the lease was installed
/// or denied, or the task was cancelled mid-fetch) lets the next task fetch.
pub(crate) struct Fetch<'a> {
    slot: &'a Slot,
}

impl Fetch<'_> {
    /// Installs a granted lease: `tokens` to spend under `policy` until `expires_at`.
    pub(crate) fn install(self, tokens: u64, policy: &Policy, expires_at: u64) {
        let slot = self.slot;
        slot.expires_at.store(expires_at, Ordering::Relaxed);
        slot.interval_ns
            .store(policy.emission_interval_ns(), Ordering::Relaxed);
        slot.burst.store(policy.burst(), Ordering::Relaxed);
        slot.denied_until.store(0, Ordering::Relaxed);
        // Release: publishes the expiry and policy above with the tokens (see `spend`).
        slot.tokens.store(tokens, Ordering::Release);
    }

    /// Records the store's denial of the lease: the key is denied here until `until`.
    pub(crate) fn deny(self, until: u64) {
        self.slot.denied_until.store(until, Ordering::Relaxed);
    }
}

impl Drop for Fetch<'_> {
    fn drop(&mut self) {
        // Release: the next fetcher (Acquire in `claim`) and the waiters see what this one did.
        self.slot.state.store(IDLE, Ordering::Release);
        self.slot.notify.notify_waiters();
    }
}
