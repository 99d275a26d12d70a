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
        self.requeue_via(|marks| queue.enqueue(marks).map(|_| ()).map_err(|e| e.to_string()))
    }

    /// `requeue` through `journal`. The set is taken out before journaling:
    /// a loss recorded meanwhile (the journal failing again, another thread)
    /// stays pending for the next attempt instead of being removed with the
    /// ones just journaled, and two callers never journal the same reminder.
    fn requeue_via(
        &self,
        journal: impl FnOnce(Vec<NewMark>) -> Result<(), String>,
    ) -> Result<Vec<String>, String> {
        let wanted = std::mem::take(&mut *lock(&self.pending));
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
        if let Err(e) = journal(marks) {
            // Back with whatever was recorded meanwhile (a set: no duplicates).
            lock(&self.pending).extend(wanted);
            return Err(e);
        }
        Ok(wanted.iter().map(|(d, c)| format!("{d}.{c}")).collect())
    }

    /// The collections still waiting for their reconcile mark, as `db.coll`.
    pub fn pending(&self) -> Vec<String> {
        lock(&self.pending)
            .iter()
            .map(|(d, c)| format!("{d}.{c}"))
            .collect()
    }

    /// `{count, reconcilePending: ["db.coll"], lastError}` for the metrics.
    pub fn snapshot(&self) -> Value {
        json!({
            "count": self.count(),
            "reconcilePending": self.pending(),
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

/// At a clean close: journals the pending reminders (the reconcile then runs
/// after the next start) or, when the journal still refuses, says which
/// collections lose their reminder. Either way one log line; what could not
/// be journaled stays in `pending` (the engine's last metrics show it).
pub fn requeue_at_close(lost: &LostMarks, queue: &MarkQueue) {
    if !lost.has_pending() {
        return;
    }
    match lost.requeue(queue) {
        Ok(queued) if !queued.is_empty() => tracing::warn!(
            "reconcile reminder journaled at close for {} (after {} lost mark(s)); it runs after the next start",
            queued.join(", "),
            lost.count()
        ),
        Ok(_) => {}
        Err(e) => {
            let pending = lost.pending();
            tracing::error!(
                "reconcile reminder lost at close: {} collection(s) ({}) after {} lost mark(s) could not be journaled ({e}); run a full sync of them after the next start",
                pending.len(),
                pending.join(", "),
                lost.count()
            )
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

    fn names(lost: &LostMarks) -> Vec<String> {
        lost.pending()
    }

    #[test]
    fn a_loss_recorded_while_the_reminder_is_journaled_stays_pending() {
        let lost = LostMarks::default();
        lost.record([("shop", "bills")], 1, "disk full");
        let queued = lost
            .requeue_via(|marks| {
                assert_eq!(marks.len(), 1);
                // The journal fails another write while this one goes through.
                lost.record([("shop", "bills"), ("shop", "tabs")], 2, "disk full");
                Ok(())
            })
            .unwrap();
        assert_eq!(queued, vec!["shop.bills"]);
        // The loss after the reminder was taken out needs its own reminder.
        assert_eq!(names(&lost), vec!["shop.bills", "shop.tabs"]);
        assert_eq!(lost.count(), 3);
    }

    #[test]
    fn a_failed_requeue_keeps_its_reminders_and_those_recorded_meanwhile() {
        let lost = LostMarks::default();
        lost.record([("shop", "bills")], 1, "disk full");
        let err = lost
            .requeue_via(|_| {
                lost.record([("shop", "tabs")], 1, "disk full");
                // A concurrent attempt finds nothing to journal twice.
                assert!(lost.requeue_via(|_| Ok(())).unwrap() == vec!["shop.tabs"]);
                lost.record([("shop", "orders")], 1, "disk full");
                Err("still full".to_owned())
            })
            .unwrap_err();
        assert_eq!(err, "still full");
        assert_eq!(names(&lost), vec!["shop.bills", "shop.orders"]);
    }

    #[test]
    fn close_journals_the_pending_reminders() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, rec) = Journal::open(JournalConfig::new(dir.path())).unwrap();
        let queue = MarkQueue::new(Arc::new(journal), 16, rec.start, rec.records);
        let lost = LostMarks::default();
        requeue_at_close(&lost, &queue); // nothing pending: nothing journaled
        assert!(queue.take(10).is_empty());
        lost.record([("shop", "bills")], 2, "disk full");
        requeue_at_close(&lost, &queue);
        assert!(!lost.has_pending());
        let taken = queue.take(10);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].kind, MarkKind::Collection);
        assert_eq!(taken[0].ns.to_string(), "shop.bills");
    }

    use proptest::prelude::*;

    /// One step: a loss, or a requeue that succeeds or fails, with losses
    /// recorded while it journals.
    #[derive(Clone, Debug)]
    enum Step {
        Lose(Vec<u8>),
        Requeue { ok: bool, meanwhile: Vec<u8> },
    }

    fn step() -> impl Strategy<Value = Step> {
        let ns = || proptest::collection::vec(0u8..4, 1..3);
        prop_oneof![
            ns().prop_map(Step::Lose),
            (any::<bool>(), proptest::collection::vec(0u8..4, 0..3))
                .prop_map(|(ok, meanwhile)| Step::Requeue { ok, meanwhile }),
        ]
    }

    proptest! {
        /// Every loss ends up covered by a reminder journaled after it, or is
        /// still pending; no reminder is journaled twice for one loss.
        #[test]
        fn every_loss_gets_a_reminder_journaled_after_it(steps in proptest::collection::vec(step(), 1..30)) {
            let lost = LostMarks::default();
            let coll = |n: &u8| format!("c{n}");
            // Collections lost and not yet covered by a journaled reminder.
            let mut uncovered = BTreeSet::new();
            let mut total = 0u64;
            for s in steps {
                match s {
                    Step::Lose(ns) => {
                        let names: Vec<String> = ns.iter().map(coll).collect();
                        lost.record(names.iter().map(|c| ("d", c.as_str())), 1, "full");
                        uncovered.extend(names);
                        total += 1;
                    }
                    Step::Requeue { ok, meanwhile } => {
                        let late: Vec<String> = meanwhile.iter().map(coll).collect();
                        let mut journaled = None;
                        let res = lost.requeue_via(|marks| {
                            if !late.is_empty() {
                                lost.record(late.iter().map(|c| ("d", c.as_str())), 1, "full");
                            }
                            journaled = Some(marks.iter().map(|m| m.coll.clone()).collect::<Vec<_>>());
                            if ok { Ok(()) } else { Err("full".into()) }
                        });
                        let Some(journaled) = journaled else {
                            // Nothing was pending: nothing to journal.
                            prop_assert!(uncovered.is_empty());
                            prop_assert_eq!(res, Ok(Vec::new()));
                            continue;
                        };
                        // Recorded while journaling: after the reminder was taken.
                        if !late.is_empty() { total += 1; }
                        if ok {
                            let dedup: BTreeSet<String> = journaled.iter().cloned().collect();
                            prop_assert_eq!(dedup.len(), journaled.len());
                            prop_assert_eq!(&dedup, &uncovered, "journals exactly what was pending");
                            prop_assert!(res.is_ok());
                            uncovered.clear();
                        } else {
                            prop_assert!(res.is_err());
                        }
                        uncovered.extend(late);
                    }
                }
                let pending: BTreeSet<String> = lost.pending().iter().map(|s| s.trim_start_matches("d.").to_owned()).collect();
                prop_assert_eq!(&pending, &uncovered);
                prop_assert_eq!(lost.count(), total);
            }
        }
    }
}
