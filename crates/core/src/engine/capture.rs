//! The engine's side of the capture ring (crate::ring): opening it, moving
//! its marks into the journal, and the loop that does so every few ms.

use super::{check_mark, Engine};
use crate::config::EngineConfig;
use crate::ring::{CaptureRing, SharedRing, Taken, CAPACITY};
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the ring is read when nothing else reads it first. Marks wait
/// there durably (page cache), so this only bounds how late the drain sees them.
const RING_INTERVAL: Duration = Duration::from_millis(5);

/// The ring, when this engine offers one, and the marks a previous process
/// left in it. A ring that cannot be opened is not fatal: marks go by call.
pub(super) fn open_ring(cfg: &EngineConfig) -> (Option<CaptureRing>, Taken) {
    // An fsync per append asks for each mark on disk before the write goes on.
    if !cfg.capture_ring || cfg.fsync_interval.is_zero() {
        return (None, Taken::default());
    }
    match CaptureRing::open(&cfg.data_dir, CAPACITY, cfg.persist_queue) {
        Ok((ring, taken)) => (Some(ring), taken),
        Err(e) => {
            tracing::warn!(
                "capture ring unavailable ({e}): each captured write calls into the engine"
            );
            (None, Taken::default())
        }
    }
}

/// Reads the ring until the engine is closed or dropped.
pub(super) async fn ring_loop(engine: Weak<Engine>) {
    let mut tick = tokio::time::interval(RING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(e) = engine.upgrade() else { return };
        if e.worker.shutdown.load(Acquire) {
            return;
        }
        e.ingest_ring();
    }
}

impl Engine {
    /// Journals the marks JS wrote into the ring since the last read. Cheap
    /// when there are none (one atomic load); never fails: a mark that cannot
    /// be kept is counted and logged like any other.
    pub fn ingest_ring(&self) {
        if let Some(ring) = &self.ring {
            if ring.pending() {
                ring.drain(true, |t| self.take_from_ring(t));
            }
        }
    }

    /// The ring's memory for the binding, or None (marks go by call).
    pub fn capture_ring(&self) -> Option<Arc<SharedRing>> {
        self.ring.as_ref().map(|r| r.shared())
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
                    tracing::error!("capture ring record skipped: {s}; run a full sync of its collection if it names one");
                }
            });
        }
        if !marks.is_empty() {
            // A journal failure is remembered and logged there (lost marks).
            let _ = self.journal_marks(marks);
        }
    }
}
