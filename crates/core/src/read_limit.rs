//! How many of the drain's reads of local may run at once. The local server
//! shares a small PC with the app, so the drain takes only what the app
//! leaves: the limit follows the read cost (time per document read) the way
//! TCP follows loss — it grows by one per round of reads while the cost stays
//! near its idle baseline and halves when the cost says the server is busy
//! (AIMD). It never drops below one read, so the drain always progresses.
//!
//! The controller (`Aimd`) is pure: the caller hands it each read's cost, so
//! tests drive it with made-up costs and no clock. `ReadGate` wraps it with
//! the permits the reads take.

use crate::poison::lock;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A read costing this many times the baseline means the server is busy.
pub const CONGESTED: f64 = 2.0;
/// Per read, the baseline moves this fraction toward a higher cost, so a
/// lasting change (bigger documents, a slower disk) becomes the new normal
/// instead of pinning the limit at its floor forever.
const FORGET: f64 = 0.002;

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
}

/// Permits for the drain's local reads, sized by `Aimd` (or fixed).
pub struct ReadGate {
    state: Mutex<GateState>,
    wake: tokio::sync::Notify,
    adaptive: bool,
    /// The current limit, for metrics.
    pub current: Arc<AtomicUsize>,
}

impl ReadGate {
    /// At most `max` reads at once; `adaptive` lowers that while the local
    /// server is busy.
    pub fn new(max: usize, adaptive: bool, current: Arc<AtomicUsize>) -> Self {
        let ctrl = Aimd::new(max);
        current.store(ctrl.limit(), Relaxed);
        Self {
            current,
            state: Mutex::new(GateState { ctrl, in_use: 0 }),
            wake: tokio::sync::Notify::new(),
            adaptive,
        }
    }

    /// Waits for a permit. Hold it for exactly the read, then `finish` it.
    pub async fn acquire(&self) -> ReadPermit<'_> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.in_use < st.ctrl.limit() {
                    st.in_use += 1;
                    let room = st.in_use < st.ctrl.limit();
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
            }
            notified.await;
        }
    }

    fn release(&self, cost: Option<f64>) {
        let mut st = lock(&self.state);
        st.in_use = st.in_use.saturating_sub(1);
        if let Some(cost) = cost.filter(|_| self.adaptive) {
            let limit = st.ctrl.observe(cost);
            self.current.store(limit, Relaxed);
        }
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
        let us = self.started.elapsed().as_secs_f64() * 1e6;
        self.gate.release(Some(us / docs.max(1) as f64));
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_idle_server_keeps_the_full_limit() {
        let mut c = Aimd::new(16);
        for _ in 0..1000 {
            assert_eq!(c.observe(100.0), 16);
        }
    }

    #[test]
    fn a_busy_server_halves_the_limit_once_per_round_then_it_grows_back() {
        let mut c = Aimd::new(16);
        for _ in 0..10 {
            c.observe(100.0);
        }
        // The app loads the server: reads cost 5x.
        assert_eq!(c.observe(500.0), 8);
        // The 8 reads that ran alongside report the same event: no new halving.
        for _ in 0..8 {
            assert_eq!(c.observe(500.0), 8);
        }
        assert_eq!(c.observe(500.0), 4);
        // Sustained load: down to one read at a time, never zero.
        for _ in 0..100 {
            assert!(c.observe(500.0) >= 1);
        }
        assert_eq!(c.limit(), 1);
        // The app goes quiet: +1 per round, back to the maximum.
        let mut steps = 0;
        while c.observe(100.0) < 16 {
            steps += 1;
            assert!(steps < 1000, "the limit never grew back");
        }
        assert!(steps > 16, "grew back faster than one per round: {steps}");
    }

    #[test]
    fn a_lasting_higher_cost_becomes_the_new_baseline() {
        let mut c = Aimd::new(8);
        c.observe(100.0);
        for _ in 0..5000 {
            c.observe(300.0);
        }
        assert!(c.baseline().is_some_and(|b| b > 150.0));
        assert_eq!(c.limit(), 8);
    }

    #[test]
    fn nonsense_costs_change_nothing() {
        let mut c = Aimd::new(4);
        c.observe(10.0);
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            assert_eq!(c.observe(bad), 4);
        }
        assert_eq!(c.baseline(), Some(10.0));
    }

    proptest! {
        #[test]
        fn the_limit_stays_within_one_and_max(max in 1usize..64,
            costs in proptest::collection::vec(0.0f64..1e6, 0..500)) {
            let mut c = Aimd::new(max);
            for cost in costs {
                let l = c.observe(cost);
                prop_assert!(l >= 1 && l <= max);
            }
        }

        #[test]
        fn after_any_history_quiet_reads_restore_the_maximum(max in 1usize..32,
            costs in proptest::collection::vec(1.0f64..1e5, 0..300)) {
            let mut c = Aimd::new(max);
            for cost in costs {
                c.observe(cost);
            }
            let floor = c.baseline().unwrap_or(1.0);
            for _ in 0..(max * max + max + 64) {
                c.observe(floor);
            }
            prop_assert_eq!(c.limit(), max);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_gate_admits_no_more_than_the_limit_and_every_waiter_gets_through() {
        let gate = Arc::new(ReadGate::new(3, true, Default::default()));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let (gate, running, peak) = (gate.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let p = gate.acquire().await;
                    let now = running.fetch_add(1, Relaxed) + 1;
                    peak.fetch_max(now, Relaxed);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Relaxed);
                    p.finish(1);
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        assert!(peak.load(Relaxed) <= 3, "peak {}", peak.load(Relaxed));
        assert!(gate.current.load(Relaxed) >= 1);
    }
}
