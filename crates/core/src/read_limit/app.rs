//! What the drain knows of the app's writes: when it last wrote, and how
//! many distinct documents it wrote (the drain keeps pace with those).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Slots of the table that tells a document the app wrote again from a new one.
const RECENT_SLOTS: usize = 4096;

/// The share the drain keeps to while the app writes, from `SYNC_DRAIN_SHARE`:
/// clamped to 0.01..=1, and 1 (never shares) when not a number.
pub fn effective_share(share: f64) -> f64 {
    if share.is_finite() {
        share.clamp(0.01, 1.0)
    } else {
        1.0
    }
}

/// What the engine tells the gate about the app's writes (`Engine::enqueue`).
#[derive(Debug)]
pub struct AppActivity {
    pub(super) last_mark_ms: AtomicU64,
    /// False at a share of 1: nothing reads `writes`, so `record` skips the hashes.
    credit: bool,
    /// Documents the app wrote, each counted once while it stays in `recent`.
    pub(super) writes: AtomicU64,
    /// Hashes of recently written documents, direct-mapped: a request that
    /// writes one bill three times gives the drain one document of credit.
    recent: Box<[AtomicU64]>,
}

impl AppActivity {
    /// For a drain that keeps to `share` while the app writes: the credit of
    /// the app's writes is only counted when something reads it (share < 1).
    pub fn for_share(share: f64) -> Self {
        Self {
            last_mark_ms: AtomicU64::new(0),
            credit: effective_share(share) < 1.0,
            writes: AtomicU64::new(0),
            recent: if effective_share(share) < 1.0 {
                (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect()
            } else {
                Box::default()
            },
        }
    }

    /// The app's marks were captured now; `written` hashes the documents
    /// they name as written (post-write or explicit marks, not intents). The
    /// iterator is lazy: at a share of 1 it is not run (no hashing per write).
    pub fn record(&self, written: impl Iterator<Item = u64>) {
        self.last_mark_ms.store(crate::metrics::now_ms(), Relaxed);
        if !self.credit {
            return;
        }
        let mut new = 0;
        for h in written {
            let h = h | 1; // never the empty slot's 0
            if self.recent[(h as usize) % RECENT_SLOTS].swap(h, Relaxed) != h {
                new += 1;
            }
        }
        if new > 0 {
            self.writes.fetch_add(new, Relaxed);
        }
    }
}
