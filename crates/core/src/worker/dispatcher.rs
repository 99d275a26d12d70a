//! The dispatcher: queue → lanes, checkpoint, journal housekeeping, and the
//! collection scans that collection marks start.

use super::{lock, CollectionScanner, DocKey, ScanSlot, WaitingScan, Worker};
use crate::blocking::off_runtime;
use crate::classify::Backoff;
use crate::mark::{Mark, MarkKind, Namespace};
use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Worker {
    /// Dispatcher: queue → lanes, checkpoint, journal housekeeping.
    pub async fn run_dispatcher(self: Arc<Self>) {
        let cap = self.settings.inflight_cap.max(1);
        // With a batching interval the dispatcher polls the queue at half of
        // it instead of being woken by every enqueue.
        let eager = self.settings.interval.is_zero();
        self.queue.eager_wake.store(eager, Relaxed);
        let poll = if eager {
            Duration::from_millis(200)
        } else {
            (self.settings.interval / 2).clamp(Duration::from_millis(1), Duration::from_millis(200))
        };
        let mut last_ack = Instant::now();
        let mut last_sync = Instant::now();
        let mut acked = 0u64;
        loop {
            if self.shutdown.load(Acquire) {
                break;
            }
            // Collection scans hold journal positions and read whole
            // collections: they count against the cap like documents.
            let room = cap.saturating_sub(self.pending() + self.scans_in_flight());
            let paused = self.paused.load(Acquire);
            let can_take = !paused && room > 0;
            if !paused && room == 0 && self.queue.has_waiting() {
                self.send_held_intents();
            }
            let marks = if !can_take {
                Vec::new()
            } else {
                self.queue.take(room.min(4096))
            };
            let got = marks.len();
            for m in marks {
                self.dispatch(m);
            }
            let checkpoint = {
                let map = lock(&self.inflight);
                let frontier = self.queue.frontier();
                map.keys()
                    .next()
                    .map_or(frontier, |first| (*first).min(frontier))
            };
            self.done_before.send_if_modified(|v| {
                let changed = checkpoint > *v;
                if changed {
                    *v = checkpoint;
                }
                changed
            });
            if checkpoint > acked && last_ack.elapsed() >= Duration::from_millis(200) {
                // Both write-and-fsync the disk: off the runtime (blocking.rs).
                match off_runtime(|| self.queue.journal().ack_before(checkpoint)) {
                    Ok(()) => acked = checkpoint,
                    Err(e) => tracing::error!("writing the journal checkpoint failed: {e}"),
                }
                last_ack = Instant::now();
            }
            if !self.settings.fsync_interval.is_zero()
                && last_sync.elapsed() >= self.settings.fsync_interval
            {
                if let Err(e) = off_runtime(|| self.queue.journal().sync()) {
                    tracing::error!("journal fsync failed: {e}");
                }
                last_sync = Instant::now();
            }
            if got == 0 {
                if can_take {
                    self.queue.wake_armed.store(true, SeqCst);
                    // Pairs with the fence in `MarkQueue::enqueue`: either
                    // that enqueue sees the wake armed, or this sees its mark.
                    std::sync::atomic::fence(SeqCst);
                    // A mark that arrived between take() and arming found
                    // the wake disarmed: look again instead of sleeping.
                    // (Memory only: spilled marks wait for the next poll,
                    // so a disk counter that is off can never spin here.)
                    if self.queue.wants_dispatcher_from_memory() {
                        continue;
                    }
                }
                tokio::select! {
                    _ = self.queue.notify.notified() => {}
                    _ = self.dispatcher_wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
        // Final checkpoint so a clean restart replays as little as possible.
        let checkpoint = *self.done_before.borrow();
        if let Err(e) = off_runtime(|| self.queue.journal().ack_before(checkpoint)) {
            tracing::error!("writing the final journal checkpoint failed: {e}");
        }
        if let Err(e) = off_runtime(|| self.queue.journal().sync()) {
            tracing::error!("final journal fsync failed: {e}");
        }
    }

    fn dispatch(self: &Arc<Self>, m: Mark) {
        match m.kind {
            MarkKind::Document | MarkKind::Intent => {
                self.hold(m.seq, 1);
                let intent = m.kind == MarkKind::Intent;
                self.route(DocKey { ns: m.ns, id: m.id }, m.seq, m.enqueued_ms, intent);
            }
            MarkKind::Collection | MarkKind::CollectionIntent => {
                // Held until the scan has journaled a mark for every difference.
                self.hold(m.seq, 1);
                self.queue_scan(m.ns, m.seq, m.kind == MarkKind::CollectionIntent);
            }
        }
    }

    /// Coalesces collection marks: per collection one scan runs and at most
    /// one waits. A waiting scan keeps only the newest mark's position: it
    /// starts once everything before that position is applied, so it covers
    /// the older marks' writes too, and the checkpoint stays behind it.
    fn queue_scan(self: &Arc<Self>, ns: Arc<Namespace>, seq: u64, intent: bool) {
        let mut release = None;
        let mut start = None;
        let mut timer = false;
        {
            let mut scans = lock(&self.scans);
            match scans.entry(ns.clone()) {
                Entry::Vacant(v) if intent => {
                    v.insert(ScanSlot {
                        running: false,
                        waiting: Some(WaitingScan { seq, intent }),
                    });
                    self.scans_waiting.fetch_add(1, SeqCst);
                    timer = true;
                }
                Entry::Vacant(v) => {
                    v.insert(ScanSlot {
                        running: true,
                        waiting: None,
                    });
                    start = Some(seq);
                }
                Entry::Occupied(mut e) => {
                    let slot = e.get_mut();
                    match slot.waiting.as_mut() {
                        None => {
                            slot.waiting = Some(WaitingScan { seq, intent });
                            self.scans_waiting.fetch_add(1, SeqCst);
                        }
                        // The newest mark takes the slot, an intent too: a
                        // plain waiting scan may read before the intent's
                        // write commits, so releasing the intent instead
                        // would lose that write if the process died before
                        // its post mark (as a document intent is kept).
                        // The scan it replaces is covered: it starts after
                        // everything before `seq` is applied.
                        Some(w) => {
                            release = Some(w.seq);
                            *w = WaitingScan { seq, intent };
                        }
                    }
                    if release.is_some() {
                        self.metrics.scans_coalesced.fetch_add(1, Relaxed);
                    }
                    // A waiting intent that is this mark needs its own
                    // timer: the vacant case's timer (if any) names an older
                    // position and `intent_expired` ignores it, so without
                    // one the scan and its held position would wait forever
                    // for a post mark that may never come.
                    timer = slot
                        .waiting
                        .as_ref()
                        .is_some_and(|w| w.intent && w.seq == seq);
                    if !slot.running && slot.waiting.as_ref().is_some_and(|w| !w.intent) {
                        start = slot.take_waiting(&self.scans_waiting).map(|w| w.seq);
                    }
                }
            }
        }
        if let Some(old) = release {
            self.release(&[old]);
        }
        if let Some(seq) = start {
            self.start_scan(ns.clone(), seq);
        }
        if timer {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(me.settings.intent_delay).await;
                me.intent_expired(ns, seq);
            });
        }
    }

    /// An intent's wait is over: it scans now, or right after the running scan.
    pub(super) fn intent_expired(self: &Arc<Self>, ns: Arc<Namespace>, seq: u64) {
        let start = {
            let mut scans = lock(&self.scans);
            let Some(slot) = scans.get_mut(&ns) else {
                return;
            };
            match slot.waiting.as_mut() {
                Some(w) if w.seq == seq && w.intent => w.intent = false,
                _ => return,
            }
            if slot.running {
                return;
            }
            slot.take_waiting(&self.scans_waiting).map(|w| w.seq)
        };
        if let Some(seq) = start {
            self.start_scan(ns, seq);
        }
    }

    fn start_scan(self: &Arc<Self>, ns: Arc<Namespace>, seq: u64) {
        self.active_scans.fetch_add(1, SeqCst);
        self.metrics.scans_started.fetch_add(1, Relaxed);
        let scanner = lock(&self.scanner).clone();
        let me = self.clone();
        tokio::spawn(async move { me.scan_collection(scanner, ns, seq).await });
    }

    /// After a scan: the waiting one (if plain) starts, else the slot empties.
    fn scan_finished(self: &Arc<Self>, ns: &Arc<Namespace>) {
        let next = {
            let mut scans = lock(&self.scans);
            let Some(slot) = scans.get_mut(ns) else {
                return;
            };
            match slot.waiting.as_ref() {
                None => {
                    scans.remove(ns);
                    None
                }
                Some(w) if w.intent => {
                    slot.running = false; // its timer starts it
                    None
                }
                Some(_) => slot.take_waiting(&self.scans_waiting).map(|w| w.seq),
            }
        };
        if let Some(seq) = next {
            self.start_scan(ns.clone(), seq);
        }
    }

    async fn scan_collection(
        self: Arc<Self>,
        scanner: Option<CollectionScanner>,
        ns: Arc<Namespace>,
        seq: u64,
    ) {
        // Scan only once every earlier mark is applied: a batch still in
        // flight could otherwise land after the scan looked and leave a state
        // that no later mark corrects (this mark *is* the correction).
        let mut done = self.done_before.subscribe();
        let _ = done
            .wait_for(|d| *d >= seq || self.shutdown.load(Acquire))
            .await;
        if self.shutdown.load(Acquire) {
            self.active_scans.fetch_sub(1, SeqCst);
            return; // not released: replayed from the journal at next start
        }
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        loop {
            let Some(scanner) = scanner.as_ref() else {
                tracing::error!("collection mark for {ns} ignored: no reconciler configured");
                break;
            };
            match scanner(ns.clone()).await {
                Ok(repairs) => {
                    tracing::info!("reconciled {ns}: {repairs} document(s) queued for repair");
                    break;
                }
                Err(e) => {
                    tracing::warn!("reconciling {ns} failed, will retry: {e}");
                    if self.shutdown.load(Acquire) {
                        // Not released: the mark stays in the journal for the next start.
                        self.active_scans.fetch_sub(1, SeqCst);
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        // The next scan counts as active before this one stops counting, so
        // a flush never sees "no scan" in between.
        self.scan_finished(&ns);
        self.scans_completed.fetch_add(1, SeqCst);
        self.active_scans.fetch_sub(1, SeqCst);
        self.release(&[seq]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::tests::test_worker;

    /// A worker whose scanner counts its calls and holds the first scan
    /// until `gate` is notified. No server is contacted.
    fn worker(dir: &std::path::Path, gate: Arc<tokio::sync::Notify>) -> Arc<Worker> {
        let w = test_worker(dir);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let scanner: CollectionScanner = Arc::new(move |_ns| {
            let first = calls.fetch_add(1, SeqCst) == 0;
            let gate = gate.clone();
            Box::pin(async move {
                if first {
                    gate.notified().await;
                }
                Ok(0)
            })
        });
        *lock(&w.scanner) = Some(scanner);
        w
    }

    /// A worker whose first scan (of a plain collection mark at position 1
    /// of `d.c`) is running, held at the returned gate.
    async fn first_scan_running() -> (
        tempfile::TempDir,
        Arc<tokio::sync::Notify>,
        Arc<Worker>,
        Arc<Namespace>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = Arc::new(tokio::sync::Notify::new());
        let w = worker(dir.path(), gate.clone());
        let ns = Arc::new(Namespace {
            db: "d".into(),
            coll: "c".into(),
        });
        w.hold(1, 1);
        w.queue_scan(ns.clone(), 1, false);
        until("the first scan to run", || w.active_scans.load(SeqCst) == 1).await;
        (dir, gate, w, ns)
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_collection_intents_are_sent_at_the_inflight_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = Arc::new(tokio::sync::Notify::new());
        // An hour of `intent_delay`: only `send_held_intents` can start these scans.
        let w = crate::worker::tests::test_worker_with(dir.path(), |s| {
            s.intent_delay = Duration::from_secs(3600)
        });
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let opener = gate.clone();
        let scanner: CollectionScanner = Arc::new(move |_ns| {
            let first = counted.fetch_add(1, SeqCst) == 0;
            let gate = gate.clone();
            Box::pin(async move {
                if first {
                    gate.notified().await;
                }
                Ok(0)
            })
        });
        *lock(&w.scanner) = Some(scanner);
        let idle = Arc::new(Namespace {
            db: "d".into(),
            coll: "idle".into(),
        });
        let busy = Arc::new(Namespace {
            db: "d".into(),
            coll: "busy".into(),
        });
        // A collection intent with no scan running, and one behind a running scan.
        w.hold(1, 1);
        w.queue_scan(idle.clone(), 1, true);
        w.hold(2, 1);
        w.queue_scan(busy.clone(), 2, false);
        until("the busy collection's scan to run", || {
            calls.load(SeqCst) == 1
        })
        .await;
        w.hold(3, 1);
        w.queue_scan(busy.clone(), 3, true);
        // The cap is full with marks waiting: held intents go now, collection
        // intents too (their post marks may be among the waiting marks).
        w.send_held_intents();
        until("the idle collection's intent to scan", || {
            calls.load(SeqCst) == 2 && !lock(&w.inflight).contains_key(&1)
        })
        .await;
        // The intent behind the running scan starts as soon as that scan ends.
        opener.notify_one();
        until("every scan to finish and release", || {
            w.scans_in_flight() == 0 && lock(&w.inflight).is_empty()
        })
        .await;
        assert_eq!(calls.load(SeqCst), 3);
        assert!(lock(&w.scans).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_intent_behind_a_running_scan_still_expires_into_a_scan() {
        let (_dir, gate, w, ns) = first_scan_running().await;
        // Two pre-write marks arrive while it runs; no post mark ever comes
        // (the write failed before its post hook, say).
        w.hold(2, 1);
        w.queue_scan(ns.clone(), 2, true);
        w.hold(3, 1);
        w.queue_scan(ns.clone(), 3, true);
        gate.notify_one();
        // After `intent_delay` the waiting intent scans like a plain mark and
        // releases its position: nothing is held forever.
        until("the intent's scan to finish", || {
            w.scans_completed.load(SeqCst) == 2
        })
        .await;
        until("every position to be released", || {
            lock(&w.inflight).is_empty()
        })
        .await;
        assert_eq!(w.scans_in_flight(), 0);
        assert!(lock(&w.scans).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_intent_joining_a_waiting_plain_scan_keeps_its_position() {
        let (_dir, gate, w, ns) = first_scan_running().await;
        w.hold(2, 1);
        w.queue_scan(ns.clone(), 2, false);
        // The pre-write mark of a write still under way: the waiting scan may
        // read before that write commits, so if its position went now a crash
        // before the post mark is journaled would lose the write.
        w.hold(3, 1);
        w.queue_scan(ns.clone(), 3, true);
        assert!(
            lock(&w.inflight).contains_key(&3),
            "the intent's position was released while its scan had not started"
        );
        gate.notify_one();
        until("the scans to finish", || {
            w.scans_in_flight() == 0 && lock(&w.inflight).is_empty()
        })
        .await;
        assert!(lock(&w.scans).is_empty());
    }
}
