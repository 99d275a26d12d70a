//! What the drain knows of the app's writes: when it last wrote, and how
//! many distinct documents it wrote (the drain keeps pace with those).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Slots of the table that tells a document the app wrote again from a new one.
const RECENT_SLOTS: usize = 4096;

/// What the engine tells the gate about the app's writes (`Engine::enqueue`).
#[derive(Debug)]
pub struct AppActivity {
    pub(super) last_mark_ms: AtomicU64,
    /// Documents the app wrote, each counted once while it stays in `recent`.
    pub(super) writes: AtomicU64,
    /// Hashes of recently written documents, direct-mapped: a request that
    /// writes one bill three times gives the drain one document of credit.
    recent: Box<[AtomicU64]>,
}

impl Default for AppActivity {
    fn default() -> Self {
        Self {
            last_mark_ms: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            recent: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl AppActivity {
    /// The app's marks were captured now; `written` hashes the documents
    /// they name as written (post-write or explicit marks, not intents).
    pub fn record(&self, written: impl Iterator<Item = u64>) {
        self.last_mark_ms.store(crate::metrics::now_ms(), Relaxed);
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
