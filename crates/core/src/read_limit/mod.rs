//! How many of the drain's reads of local may run at once. The local server
//! shares a small PC with the app, so the drain takes only what the app
//! leaves: the limit follows the read cost (time per document read) the way
//! TCP follows loss — it grows by one per round of reads while the cost stays
//! near its idle baseline and halves when the cost says the server is busy
//! (AIMD). It never drops below one read, so the drain always progresses.
//!
//! The read cost only sees a server busy enough to double it; the app's own
//! requests suffer well before that. So while the app writes (the engine
//! captured a mark in the last [`APP_QUIET`]) the drain keeps pace with it
//! and gives the backlog only a share of the time: one read at a time; the
//! documents the app wrote meanwhile are read at once (the drain never falls
//! behind the app because of sharing), and for the rest of a read the drain
//! then waits (1/share - 1) times what it took. A flush (or close) waits for
//! no share: it wants the backlog now.
//!
//! The controller (`Aimd`) is pure: the caller hands it each read's cost, so
//! tests drive it with made-up costs and no clock. `ReadGate` wraps it with
//! the permits the reads take.

mod app;

use crate::poison::lock;
pub use app::AppActivity;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A read costing this many times the baseline means the server is busy.
pub const CONGESTED: f64 = 2.0;
/// Per read, the baseline moves this fraction toward a higher cost, so a
/// lasting change (bigger documents, a slower disk) becomes the new normal
/// instead of pinning the limit at its floor forever.
const FORGET: f64 = 0.002;
/// The app counts as writing for this long after its last captured mark.
pub const APP_QUIET: Duration = Duration::from_millis(250);
/// Longest wait between two reads while sharing, whatever a read cost.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Most of the app's writes a quiet drain keeps as credit for later reads.
const MAX_CREDIT: u64 = 1_000;

/// The additive-increase / multiplicative-decrease controller.
#[derive(Clone, Debug)]
pub struct Aimd {
    max: usize,
    limit: f64,
    /// Lowest recent cost (µs per document): the idle server.
    baseline: Option<f64>,
    /// Reads still to ignore after a decrease: they ran alongside the one
    /// that showed the congestion, so they report the same event.
    hold: usize,
}

impl Aimd {
    /// Starts at `max` (an idle server is the common case at start).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            limit: max as f64,
            baseline: None,
            hold: 0,
        }
    }

    /// Reads allowed at once now (1..=max).
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(1, self.max)
    }

    /// The idle cost the controller compares with, if it has seen a read.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }

    /// Takes one read's cost (µs per document) and returns the new limit.
    pub fn observe(&mut self, cost: f64) -> usize {
        if !cost.is_finite() || cost < 0.0 {
            return self.limit();
        }
        let base = match self.baseline {
            Some(b) if cost >= b => b + (cost - b) * FORGET,
            _ => cost,
        };
        self.baseline = Some(base);
        if self.hold > 0 {
            self.hold -= 1;
            return self.limit();
        }
        if cost > base * CONGESTED {
            self.limit = (self.limit / 2.0).max(1.0);
            self.hold = self.limit();
        } else {
            // +1 per `limit` reads: one per round of concurrent reads.
            self.limit = (self.limit + 1.0 / self.limit).min(self.max as f64);
        }
        self.limit()
    }
}

struct GateState {
    ctrl: Aimd,
    in_use: usize,
    /// While sharing: the next read waits for this.
    not_before: Option<Instant>,
    /// `AppActivity::writes` when last looked at, and the app's writes not yet
    /// matched by documents read: those the drain reads without a wait.
    writes_seen: u64,
    credit: u64,
}

/// Permits for the drain's local reads, sized by `Aimd` (or fixed).
pub struct ReadGate {
    state: Mutex<GateState>,
    wake: tokio::sync::Notify,
    adaptive: bool,
    /// The current limit, for metrics.
    pub current: Arc<AtomicUsize>,
    /// The current share in thousandths, for metrics.
    pub share_permille: Arc<AtomicUsize>,
    /// Set once the worker exists: `flush()` callers waiting (no sharing then).
    urgent: std::sync::OnceLock<Arc<AtomicUsize>>,
    /// Share of the time the drain keeps to while the app writes (1: never shares).
    app_share: f64,
    /// The app's writes, as the engine captures them.
    app: Arc<AppActivity>,
    /// How long after its last mark the app still counts as writing.
    quiet: Duration,
}

impl ReadGate {
    /// At most `max` reads at once; `adaptive` lowers that while the local
    /// server is busy. `current` and `share_permille` report the limit and the
    /// share (thousandths) for metrics.
    pub fn new(
        max: usize,
        adaptive: bool,
        current: Arc<AtomicUsize>,
        share_permille: Arc<AtomicUsize>,
    ) -> Self {
        let ctrl = Aimd::new(max);
        current.store(ctrl.limit(), Relaxed);
        share_permille.store(1000, Relaxed);
        Self {
            current,
            share_permille,
            state: Mutex::new(GateState {
                ctrl,
                in_use: 0,
                not_before: None,
                writes_seen: 0,
                credit: 0,
            }),
            wake: tokio::sync::Notify::new(),
            adaptive,
            urgent: std::sync::OnceLock::new(),
            app_share: 1.0,
            app: Arc::new(AppActivity::for_share(1.0)),
            quiet: APP_QUIET,
        }
    }

    /// While the app writes (`app` saw a mark less than [`APP_QUIET`] ago),
    /// the backlog gets `share` of the time (clamped to 0.01..=1).
    pub fn sharing_with_app(mut self, share: f64, app: Arc<AppActivity>) -> Self {
        self.app_share = app::effective_share(share);
        self.app = app;
        self
    }

    /// True while the drain keeps to its share: the app wrote lately and no flush waits.
    fn sharing(&self) -> bool {
        self.app_share < 1.0
            && !self.urgent()
            && crate::metrics::now_ms().saturating_sub(self.app.last_mark_ms.load(Relaxed))
                < self.quiet.as_millis() as u64
    }

    /// Reads skip the share's waits while `urgent` is above zero (the
    /// worker's count of `flush()` callers, close included).
    pub fn hurry_when(&self, urgent: Arc<AtomicUsize>) {
        let _ = self.urgent.set(urgent);
    }

    /// Wakes readers waiting out a share (a flush has started).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    fn urgent(&self) -> bool {
        self.urgent.get().is_some_and(|u| u.load(Relaxed) > 0)
    }

    /// Waits for a permit. Hold it for exactly the read, then `finish` it.
    pub async fn acquire(&self) -> ReadPermit<'_> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut st = lock(&self.state);
                let sharing = self.sharing();
                let limit = if sharing { 1 } else { st.ctrl.limit() };
                let due = match st.not_before {
                    Some(t) if sharing => t.checked_duration_since(Instant::now()),
                    _ => None,
                };
                match due {
                    Some(d) if !d.is_zero() => Some(d),
                    _ if st.in_use < limit => {
                        st.in_use += 1;
                        st.not_before = None;
                        let room = st.in_use < limit;
                        drop(st);
                        if room {
                            // Room for more: pass the wake-up on.
                            self.wake.notify_one();
                        }
                        return ReadPermit {
                            gate: self,
                            started: Instant::now(),
                            done: false,
                        };
                    }
                    _ => None,
                }
            };
            match wait_until {
                Some(d) => {
                    let _ = tokio::time::timeout(d, notified).await;
                }
                None => notified.await,
            }
        }
    }

    fn release(&self, read: Option<(f64, Duration, usize)>) {
        let mut st = lock(&self.state);
        st.in_use = st.in_use.saturating_sub(1);
        let writes = self.app.writes.load(Relaxed);
        let new = writes.saturating_sub(st.writes_seen);
        st.writes_seen = writes;
        st.credit = (st.credit + new).min(MAX_CREDIT);
        let mut share = 1.0;
        if let Some((cost, took, docs)) = read {
            if self.adaptive {
                let limit = st.ctrl.observe(cost);
                self.current.store(limit, Relaxed);
            }
            let docs = docs.max(1) as u64;
            let covered = st.credit.min(docs);
            st.credit -= covered;
            if self.sharing() {
                // The documents the app wrote meanwhile cost no wait; for the rest of
                // this read's time the drain stays away (1/share - 1) times as long.
                share = self.app_share;
                let backlog_part = (docs - covered) as f64 / docs as f64;
                let wait = took
                    .mul_f64((1.0 / share - 1.0) * backlog_part)
                    .min(MAX_WAIT);
                st.not_before = Some(Instant::now() + wait);
            }
        }
        self.share_permille
            .store((share * 1000.0).round() as usize, Relaxed);
        drop(st);
        self.wake.notify_one();
    }
}

/// One read's permit. Dropped without `finish` (a failed read), it gives the
/// permit back without a sample: an error's time says nothing about load.
pub struct ReadPermit<'a> {
    gate: &'a ReadGate,
    started: Instant,
    done: bool,
}

impl ReadPermit<'_> {
    /// The read is over and returned `docs` documents' worth of work.
    pub fn finish(mut self, docs: usize) {
        self.done = true;
        let took = self.started.elapsed();
        let us = took.as_secs_f64() * 1e6;
        self.gate
            .release(Some((us / docs.max(1) as f64, took, docs)));
    }
}

impl Drop for ReadPermit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.gate.release(None);
        }
    }
}

#[cfg(test)]
mod tests;
