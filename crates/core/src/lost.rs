//! Marks that could not be journaled (full disk, broken journal): counted,
//! the last reason kept, and their collections remembered so a whole-
//! collection reconcile is queued as soon as the journal takes writes again.
//!
//! The reminder lives in memory only: the journal is exactly what failed, so
//! there is nowhere durable left to write it. A crash before the journal
//! recovers loses the reminder (the count is logged); a full sync repairs it.

use crate::mark::MarkKind;
use crate::queue::{MarkQueue, NewMark};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct LostMarks {
    count: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// (db, collection) still waiting for their reconcile mark.
    pending: Mutex<BTreeSet<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LostMarks {
    /// Notes `n` marks of these namespaces as lost for `reason`.
    pub fn record<'a>(
        &self,
        namespaces: impl IntoIterator<Item = (&'a str, &'a str)>,
        n: u64,
        reason: &str,
    ) {
        self.count.fetch_add(n, Relaxed);
        *lock(&self.last_error) = Some(reason.to_owned());
        let mut pending = lock(&self.pending);
        for (db, coll) in namespaces {
            pending.insert((db.to_owned(), coll.to_owned()));
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn has_pending(&self) -> bool {
        !lock(&self.pending).is_empty()
    }

    /// Journals one collection mark per remembered collection. On success
    /// they are forgotten and returned; on failure everything stays for the
    /// next attempt.
    pub fn requeue(&self, queue: &MarkQueue) -> Result<Vec<String>, String> {
        let wanted: Vec<(String, String)> = lock(&self.pending).iter().cloned().collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let marks = wanted
            .iter()
            .map(|(db, coll)| NewMark {
                kind: MarkKind::Collection,
                db: db.clone(),
                coll: coll.clone(),
                id: bson::RawDocumentBuf::new(),
            })
            .collect();
        queue.enqueue(marks).map_err(|e| e.to_string())?;
        let mut pending = lock(&self.pending);
        for ns in &wanted {
            pending.remove(ns);
        }
        Ok(wanted.iter().map(|(d, c)| format!("{d}.{c}")).collect())
    }

    /// `{count, reconcilePending: ["db.coll"], lastError}` for the metrics.
    pub fn snapshot(&self) -> Value {
        let pending: Vec<String> = lock(&self.pending)
            .iter()
            .map(|(d, c)| format!("{d}.{c}"))
            .collect();
        json!({
            "count": self.count(),
            "reconcilePending": pending,
            "lastError": lock(&self.last_error).clone(),
        })
    }
}

/// Retries the reminders every half second until the engine shuts down.
pub async fn requeue_loop(
    lost: std::sync::Arc<LostMarks>,
    queue: std::sync::Arc<MarkQueue>,
    worker: std::sync::Arc<crate::worker::Worker>,
) {
    use std::sync::atomic::Ordering::Acquire;
    while !worker.shutdown.load(Acquire) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if !lost.has_pending() {
            continue;
        }
        match lost.requeue(&queue) {
            Ok(queued) if !queued.is_empty() => {
                tracing::warn!(
                    "journal takes writes again: reconcile queued for {} (after {} lost mark(s))",
                    queued.join(", "),
                    lost.count()
                );
                worker.wake_all();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("reconcile reminder not journaled yet: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalConfig};
    use std::sync::Arc;

    #[test]
    fn remembers_collections_until_a_reconcile_mark_is_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, rec) = Journal::open(JournalConfig::new(dir.path())).unwrap();
        let queue = MarkQueue::new(Arc::new(journal), 16, rec.start, rec.records);
        let lost = LostMarks::default();
        lost.record([("shop", "bills"), ("shop", "orders")], 3, "disk full");
        lost.record([("shop", "bills")], 1, "disk full again");
        assert_eq!(lost.count(), 4);
        let snap = lost.snapshot();
        assert_eq!(
            snap["reconcilePending"],
            json!(["shop.bills", "shop.orders"])
        );
        assert_eq!(snap["lastError"], "disk full again");
        let queued = lost.requeue(&queue).unwrap();
        assert_eq!(queued, vec!["shop.bills", "shop.orders"]);
        assert!(!lost.has_pending());
        let taken = queue.take(10);
        assert_eq!(taken.len(), 2);
        assert!(taken.iter().all(|m| m.kind == MarkKind::Collection));
        // The count stays: it is a total, not a state.
        assert_eq!(lost.count(), 4);
        assert!(lost.requeue(&queue).unwrap().is_empty());
    }
}
