//! The engine's side of the capture ring (crate::ring): opening it, moving
//! its marks into the journal, and the loop that does so every few ms.

use super::{check_mark, Engine};
use crate::config::EngineConfig;
use crate::mark::MarkKind;
use crate::queue::NewMark;
use crate::ring::{CaptureRing, SharedRing, Taken, CAPACITY, FILE};
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the ring is read while the app writes, when nothing else reads
/// it first. Marks wait there durably (page cache), so this only bounds how
/// late the drain sees them (its batches wait 100 ms anyway) and adds to the
/// power-loss window of the journal's fsync (1 s). At 5 ms the wake-ups
/// alone were over a third of the reader's CPU.
const RING_INTERVAL: Duration = Duration::from_millis(20);
/// The longest wait between reads of an idle ring: each read that finds
/// nothing doubles the wait up to this (a wake-up costs ~25 µs of CPU on a
/// small VM, spent for nothing while the app is idle), and the first read
/// that finds marks goes back to [`RING_INTERVAL`].
const RING_IDLE_INTERVAL: Duration = Duration::from_millis(40);

/// The wait before the next read, after one that found marks or not.
fn next_interval(last: Duration, found: bool) -> Duration {
    if found {
        RING_INTERVAL
    } else {
        (last * 2).min(RING_IDLE_INTERVAL)
    }
}

/// The ring, the marks a previous process left in it, and whether JS may
/// write into it. A ring that cannot be opened is not fatal: marks go by call.
/// Where this engine will not share one (off, fsync per append, a
/// copy-on-write filesystem) a ring file left by an earlier start is still
/// replayed, then retired.
pub(super) fn open_ring(cfg: &EngineConfig) -> (Option<CaptureRing>, Taken, bool) {
    // An fsync per append asks for each mark on disk before the write goes on.
    let mut share = cfg.capture_ring && !cfg.fsync_interval.is_zero();
    if share && crate::platform::overwrite_may_allocate(&cfg.data_dir) {
        tracing::info!(
            "capture ring off: the data dir's filesystem copies on write (a full disk would crash a write into it); each captured write calls into the engine"
        );
        share = false;
    }
    let left_over = cfg.persist_queue && cfg.data_dir.join(FILE).exists();
    if !share && !left_over {
        return (None, Taken::default(), false);
    }
    match CaptureRing::open(&cfg.data_dir, CAPACITY, cfg.persist_queue) {
        Ok((ring, taken)) => (Some(ring), taken, share),
        Err(e) => {
            tracing::warn!(
                "capture ring unavailable ({e}): each captured write calls into the engine"
            );
            (None, Taken::default(), false)
        }
    }
}

/// The ring's reader thread, and a signal that it has returned.
pub(super) struct RingReader {
    handle: std::thread::JoinHandle<()>,
    /// Resolves (with an error: its sender is dropped) once the thread's loop
    /// has returned, so close can wait for it with a bound: std has no timed join.
    finished: tokio::sync::oneshot::Receiver<()>,
}

impl RingReader {
    /// Wakes the reader so it sees the shutdown, and joins it if it ends
    /// before `grace`; else leaves it (it holds only a weak engine reference).
    pub(super) async fn stop(self, grace: tokio::time::Instant) {
        self.handle.thread().unpark();
        if tokio::time::timeout_at(grace, self.finished).await.is_ok() {
            let _ = self.handle.join();
        }
    }
}

/// Reads the ring every [`RING_INTERVAL`] (idle: up to [`RING_IDLE_INTERVAL`]) on a thread of its own until the
/// engine closes or is dropped. A plain thread, not a runtime task: the
/// runtime turns its IO, signal and timer drivers at every wake-up, which
/// measured ~5× a thread's sleep, and this wakes 50 times a second beside
/// the app's own writes. None when no thread can be started: the runtime
/// then reads the ring instead ([`ring_task`]).
pub(super) fn spawn_ring_reader(engine: &Arc<Engine>) -> Option<RingReader> {
    let weak = Arc::downgrade(engine);
    let dispatch = engine.dispatch.clone();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("dualsync-ring".into())
        .spawn(move || {
            // Declared first, dropped last: close's wait ends after everything else here.
            let _done = done;
            let _logs = tracing::dispatcher::set_default(&dispatch);
            let mut wait = RING_INTERVAL;
            loop {
                // Parked, not asleep: close unparks it to end without waiting out an idle wait.
                std::thread::park_timeout(wait);
                match read_ring_once(&weak, wait) {
                    Some(next) => wait = next,
                    None => return,
                }
            }
        });
    match spawned {
        Ok(handle) => Some(RingReader { handle, finished }),
        Err(e) => {
            tracing::warn!("capture ring: no thread for it ({e}); the sync runtime reads it");
            None
        }
    }
}

/// The ring reader as a runtime task, where no thread could be started.
pub(super) async fn ring_task(engine: Weak<Engine>) {
    let mut wait = RING_INTERVAL;
    loop {
        tokio::time::sleep(wait).await;
        match read_ring_once(&engine, wait) {
            Some(next) => wait = next,
            None => return,
        }
    }
}

/// One read of the ring after waiting `waited`: the wait before the next
/// read; None once the engine is closing or gone.
fn read_ring_once(engine: &Weak<Engine>, waited: Duration) -> Option<Duration> {
    let e = engine.upgrade()?;
    if e.worker.shutdown.load(Acquire) {
        return None;
    }
    Some(next_interval(waited, e.ingest_ring()))
}

impl Engine {
    /// Journals the marks JS wrote into the ring since the last read. Cheap
    /// when there are none (one atomic load); never fails: a mark that cannot
    /// be kept is counted and logged like any other.
    /// Returns whether there were any.
    pub fn ingest_ring(&self) -> bool {
        if !self.ring_shared {
            return false;
        }
        match &self.ring {
            Some(ring) if ring.pending() => {
                ring.drain(true, |t| self.take_from_ring(t));
                true
            }
            _ => false,
        }
    }

    /// The ring's memory for the binding, or None (marks go by call).
    pub fn capture_ring(&self) -> Option<Arc<SharedRing>> {
        self.ring
            .as_ref()
            .filter(|_| self.ring_shared)
            .map(|r| r.shared())
    }

    /// After the replayed marks are journaled: the ring moves past them, or,
    /// when it is not shared this time, is retired.
    pub(super) fn settle_ring(&self) {
        match &self.ring {
            Some(r) if self.ring_shared => r.commit_replay(),
            Some(r) => r.retire(),
            None => {}
        }
    }

    pub(super) fn take_from_ring(&self, taken: Taken) {
        let mut skipped = taken.skipped;
        let mut marks = Vec::with_capacity(taken.marks.len());
        for m in taken.marks {
            match check_mark(&m) {
                Ok(()) => marks.push(m),
                Err(e) => skipped.push(format!("collection {:?}: {e}", m.coll)),
            }
        }
        if !skipped.is_empty() {
            self.metrics
                .ring_skipped
                .fetch_add(skipped.len() as u64, Relaxed);
            tracing::dispatcher::with_default(&self.dispatch, || {
                for s in &skipped {
                    tracing::error!("capture ring record skipped: {s}; the collections marked since start are reconciled to repair it");
                }
            });
        }
        if !skipped.is_empty() {
            // An unreadable record named a collection of the app's that JS had sent a mark
            // of by call before (lib/ring.js learns names from accepted calls), so one of
            // these: reconcile them all. At open there are none yet; the JS layer starts a
            // full sync instead when it sees `corruptRecords` (lib/sync.js).
            marks.extend(
                self.metrics
                    .namespaces()
                    .into_iter()
                    .map(|(db, coll)| NewMark {
                        kind: MarkKind::Collection,
                        db,
                        coll,
                        id: bson::RawDocumentBuf::new(),
                    }),
            );
        }
        if !marks.is_empty() {
            // A journal failure is remembered and logged there (lost marks).
            let _ = self.journal_marks(marks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_ring_is_read_less_often_and_a_busy_one_at_once() {
        let mut wait = RING_INTERVAL;
        let mut waits = Vec::new();
        for _ in 0..6 {
            wait = next_interval(wait, false);
            waits.push(wait.as_millis());
        }
        assert!(RING_INTERVAL < RING_IDLE_INTERVAL);
        assert_eq!(waits, [40, 40, 40, 40, 40, 40]);
        assert_eq!(next_interval(RING_IDLE_INTERVAL, true), RING_INTERVAL);
    }

    /// A reader made like spawn_ring_reader's: it returns when unparked and
    /// `stop` is set, or, when `hang` is set, only once `release` is sent.
    fn reader(
        stop: Arc<std::sync::atomic::AtomicBool>,
        hang: Option<std::sync::mpsc::Receiver<()>>,
        ended: Arc<std::sync::atomic::AtomicBool>,
    ) -> RingReader {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::spawn(move || {
            let _done = done;
            match hang {
                Some(release) => {
                    let _ = release.recv();
                }
                None => {
                    while !stop.load(Acquire) {
                        std::thread::park();
                    }
                }
            }
            ended.store(true, Release);
        });
        RingReader { handle, finished }
    }

    #[test]
    fn close_joins_a_reader_that_ends_and_leaves_one_that_hangs() {
        use std::sync::atomic::AtomicBool;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        // Ends once woken: stop returns after it has (the join saw it end).
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let r = reader(stop.clone(), None, ended.clone());
        stop.store(true, Release);
        rt.block_on(r.stop(tokio::time::Instant::now() + Duration::from_secs(30)));
        assert!(ended.load(Acquire), "stop returned before the reader ended");
        // Never ends by itself: stop gives up at the grace, and the thread is left running.
        let (release, hang) = std::sync::mpsc::channel();
        let ended = Arc::new(AtomicBool::new(false));
        let r = reader(Arc::new(AtomicBool::new(false)), Some(hang), ended.clone());
        rt.block_on(r.stop(tokio::time::Instant::now() + Duration::from_millis(50)));
        assert!(!ended.load(Acquire), "the hanging reader was not left");
        let _ = release.send(());
    }
}
