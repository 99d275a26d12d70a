//! A lane: takes batches of its documents, applies them (retrying transient
//! failures), then settles each document: done, requeued or dead-lettered.

use super::{lock, DocKey, Lane, PendingDoc, Worker, BATCH_TIMEOUT};
use crate::apply::{BatchDoc, DocOutcome};
use crate::classify::Backoff;
use crate::metrics::now_ms;
use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Worker {
    fn next_batch(&self, lane: &Lane) -> Result<Vec<(DocKey, PendingDoc)>, Option<Duration>> {
        let mut st = lock(&lane.state);
        if st.docs.is_empty() {
            st.oldest = None;
            return Err(None);
        }
        let now = Instant::now();
        let full = st.docs.len() >= self.settings.batch_size;
        let waited = st.oldest.map_or(Duration::ZERO, |t| now.duration_since(t));
        let urgent = self.urgent.load(Relaxed) > 0 || self.shutdown.load(Relaxed);
        if !full && !urgent && waited < self.settings.interval {
            return Err(Some(self.settings.interval - waited));
        }
        let mut batch = Vec::with_capacity(self.settings.batch_size);
        let mut deferred = Vec::new();
        let mut soonest: Option<Instant> = None;
        while batch.len() < self.settings.batch_size {
            let Some(key) = st.order.pop_front() else {
                break;
            };
            let ready = !st.sending.contains(&key)
                && st
                    .docs
                    .get(&key)
                    .is_some_and(|d| d.not_before.is_none_or(|t| t <= now));
            if ready {
                if let Some(doc) = st.docs.remove(&key) {
                    batch.push((key, doc));
                }
            } else {
                if let Some(t) = st.docs.get(&key).and_then(|d| d.not_before) {
                    soonest = Some(soonest.map_or(t, |s| s.min(t)));
                }
                deferred.push(key);
                if deferred.len() > st.docs.len() {
                    break;
                }
            }
        }
        for k in deferred.into_iter().rev() {
            st.order.push_front(k);
        }
        st.oldest = if st.docs.is_empty() { None } else { Some(now) };
        for (key, _) in &batch {
            st.sending.insert(key.clone());
        }
        if batch.is_empty() {
            return Err(soonest.map(|t| t.saturating_duration_since(now)));
        }
        Ok(batch)
    }

    /// One lane: batches until shutdown, up to `LANE_DEPTH` in flight.
    pub async fn run_lane(self: Arc<Self>, index: usize) {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let lane = &self.lanes[index];
        let mut in_flight = FuturesUnordered::new();
        loop {
            if self.shutdown.load(Acquire) {
                // Let batches under way end (they stop retrying at shutdown).
                while in_flight.next().await.is_some() {}
                return;
            }
            let paused = self.paused.load(Acquire);
            let mut wait = None;
            if !paused && in_flight.len() < super::LANE_DEPTH {
                match self.next_batch(lane) {
                    Ok(batch) => {
                        in_flight.push(self.apply_until_done(lane, batch));
                        continue;
                    }
                    Err(w) => wait = w,
                }
            }
            let wait = if paused {
                Duration::from_secs(3600)
            } else {
                wait.unwrap_or(Duration::from_secs(1))
            };
            tokio::select! {
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                _ = lane.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn apply_until_done(&self, lane: &Lane, batch: Vec<(DocKey, PendingDoc)>) {
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        let backoff = &mut backoff;
        let docs: Vec<BatchDoc> = batch
            .iter()
            .map(|(k, _)| BatchDoc {
                ns: k.ns.clone(),
                id: k.id.clone(),
            })
            .collect();
        loop {
            let started = Instant::now();
            // A black-holed connection can stall a command indefinitely; the
            // writes are idempotent, so giving up and resending is safe.
            let attempt = tokio::time::timeout(BATCH_TIMEOUT, self.applier.apply(&docs)).await;
            let attempt = attempt.unwrap_or_else(|_| {
                Err(crate::apply::TransientFailure::atlas(format!(
                    "batch timed out after {} s",
                    BATCH_TIMEOUT.as_secs()
                )))
            });
            match attempt {
                Ok(outcomes) => {
                    backoff.reset();
                    // A batch with refused documents is not a success.
                    let clean = !outcomes
                        .iter()
                        .any(|o| matches!(o, DocOutcome::Rejected { .. }));
                    self.metrics.record_batch(clean);
                    self.metrics
                        .apply_latency
                        .record(started.elapsed().as_millis() as u64);
                    let recovered = self.metrics.set_atlas_connected(true);
                    if let Some(down_ms) =
                        recovered.filter(|_| self.metrics.transient_failures.load(Relaxed) > 0)
                    {
                        tracing::info!(
                            "✓ Atlas reachable again after {} s of failures",
                            down_ms / 1000
                        );
                    }
                    self.metrics.set_last_error(None);
                    self.metrics.set_local_error(None);
                    self.metrics.last_success_ms.store(now_ms(), Relaxed);
                    self.settle(lane, batch, outcomes);
                    return;
                }
                Err(failure) => {
                    self.metrics.record_batch(false);
                    self.metrics.transient_failures.fetch_add(1, Relaxed);
                    // Local unreadable says nothing about Atlas.
                    let atlas_side = failure.side == crate::apply::Side::Atlas;
                    let newly_down =
                        atlas_side && self.metrics.set_atlas_connected(false).is_some();
                    let newly_local = if atlas_side {
                        self.metrics.set_last_error(Some(failure.message.clone()));
                        false
                    } else {
                        self.metrics.set_local_error(Some(failure.message.clone()))
                    };
                    let delay = backoff.next_delay();
                    // One warning per outage; the retries themselves are debug noise.
                    if newly_local {
                        tracing::warn!(
                            "reading local failed, retrying with backoff (writes keep being journaled): {}",
                            failure.message
                        );
                    } else if newly_down {
                        tracing::warn!(
                            "Atlas writes failing, retrying with backoff until they succeed (writes keep being journaled): {}",
                            failure.message
                        );
                    } else {
                        tracing::debug!(
                            "batch of {} failed, retrying in {} ms: {}",
                            docs.len(),
                            delay.as_millis(),
                            failure.message
                        );
                    }
                    if self.shutdown.load(Acquire) {
                        return; // still in the journal: replayed at next start
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = lane.wake.notified(), if self.shutdown.load(Acquire) => {}
                    }
                    if self.shutdown.load(Acquire) {
                        return;
                    }
                    self.metrics.retries.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn settle(&self, lane: &Lane, batch: Vec<(DocKey, PendingDoc)>, outcomes: Vec<DocOutcome>) {
        {
            // Newer marks of these documents may go from now on.
            let mut st = lock(&lane.state);
            for (key, _) in &batch {
                st.sending.remove(key);
            }
        }
        let now = now_ms();
        for ((key, doc), outcome) in batch.into_iter().zip(outcomes) {
            let counters = self.metrics.collection(&key.ns.db, &key.ns.coll);
            match outcome {
                DocOutcome::Upserted | DocOutcome::Deleted => {
                    if outcome == DocOutcome::Upserted {
                        self.metrics.upserts.fetch_add(1, Relaxed);
                        counters.upserts.fetch_add(1, Relaxed);
                    } else {
                        self.metrics.deletes.fetch_add(1, Relaxed);
                        counters.deletes.fetch_add(1, Relaxed);
                    }
                    self.metrics
                        .lag
                        .record(now.saturating_sub(doc.first_enqueued_ms));
                    if !self.dead.is_empty() {
                        if let Err(e) = self.dead.resolve(&key.ns, &key.id) {
                            tracing::error!("{e}");
                        }
                    }
                    if doc.later_intents.is_empty() {
                        self.finish(doc);
                    } else {
                        self.carry_intents(lane, key, doc);
                    }
                }
                DocOutcome::Superseded => {
                    // Another process changed it after our read: the journal
                    // positions stay held and the document goes out again.
                    self.metrics.verify_resends.fetch_add(1, Relaxed);
                    let mut doc = doc;
                    doc.intent = false;
                    self.requeue(lane, key, doc, 0, Instant::now());
                }
                DocOutcome::Rejected { code, message } => {
                    self.metrics.permanent_failures.fetch_add(1, Relaxed);
                    counters.failures.fetch_add(1, Relaxed);
                    let attempts = doc.attempts + 1;
                    if attempts > self.settings.max_retries {
                        self.dead_letter(&key, code, &message, attempts, doc);
                    } else {
                        self.metrics.retries.fetch_add(1, Relaxed);
                        let delay =
                            self.settings.backoff_min * 2u32.saturating_pow(attempts.min(16));
                        let delay = delay.min(self.settings.backoff_max);
                        self.requeue(lane, key, doc, attempts, Instant::now() + delay);
                    }
                }
            }
        }
    }

    fn dead_letter(
        &self,
        key: &DocKey,
        code: Option<i32>,
        message: &str,
        attempts: u32,
        doc: PendingDoc,
    ) {
        tracing::error!(
            "{} _id {} moved to dead letters after {attempts} attempts: {message}",
            key.ns,
            crate::mark::id_value(&key.id).map_or_else(|| "?".to_string(), |v| v.to_string())
        );
        match self.dead.add(&key.ns, &key.id, code, message, attempts) {
            Ok(()) => {
                self.metrics.dead_lettered.fetch_add(1, Relaxed);
                self.finish(doc);
            }
            Err(e) => {
                // Cannot record it: keep it pending rather than lose it.
                tracing::error!("{e}");
                let lane = &self.lanes[self.lane_of(key)];
                self.requeue(
                    lane,
                    key.clone(),
                    doc,
                    attempts,
                    Instant::now() + self.settings.backoff_max,
                );
            }
        }
    }

    fn requeue(
        &self,
        lane: &Lane,
        key: DocKey,
        mut doc: PendingDoc,
        attempts: u32,
        not_before: Instant,
    ) {
        let mut st = lock(&lane.state);
        match st.docs.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                // A newer mark arrived meanwhile: merge, keep the failure count.
                let newer = e.get_mut();
                // Only a plain newer mark covers the intents this one held.
                let newer_plain = !newer.intent;
                if newer.intent && !doc.intent {
                    // The newer entry holds only intents, whose writes may
                    // not have committed, and this document goes out again
                    // now: like intents joining a plain entry (`route`),
                    // they outlive that send instead of being released by it.
                    let mut intents = std::mem::take(&mut newer.seqs);
                    newer.later_intents.append(&mut intents);
                    newer.intent = false;
                }
                newer.seqs.append(&mut doc.seqs);
                if !newer_plain {
                    newer.later_intents.append(&mut doc.later_intents);
                } else {
                    // The newer plain mark was journaled after these intents,
                    // so it covers them (the rule `route` applies); held as
                    // later intents they would wait for a post mark that
                    // already came, stalling the document for `intent_delay`.
                    newer.seqs.append(&mut doc.later_intents);
                }
                if !(doc.intent && attempts == 0) {
                    newer.attempts = attempts;
                    newer.not_before = Some(not_before);
                }
                newer.first_enqueued_ms = newer.first_enqueued_ms.min(doc.first_enqueued_ms);
                self.pending_docs.fetch_sub(1, Relaxed);
            }
            Entry::Vacant(v) => {
                doc.attempts = attempts;
                doc.not_before = Some(not_before);
                v.insert(doc);
                st.order.push_back(key);
                st.oldest.get_or_insert_with(Instant::now);
            }
        }
        drop(st);
        lane.wake.notify_one();
    }

    /// After a send, intents that arrived while it waited become a new
    /// intent entry: their writes may not have committed when it read.
    fn carry_intents(&self, lane: &Lane, key: DocKey, doc: PendingDoc) {
        let PendingDoc {
            seqs,
            later_intents,
            first_enqueued_ms,
            ..
        } = doc;
        let carried = PendingDoc {
            intent: true,
            later_intents: Vec::new(),
            seqs: later_intents,
            first_enqueued_ms,
            attempts: 0,
            not_before: None,
        };
        self.release(&seqs);
        self.requeue(
            lane,
            key,
            carried,
            0,
            Instant::now() + self.settings.intent_delay,
        );
    }

    fn finish(&self, doc: PendingDoc) {
        self.pending_docs.fetch_sub(1, Relaxed);
        self.release(&doc.seqs);
        self.release(&doc.later_intents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mark::Namespace;
    use crate::worker::tests::test_worker;

    #[test]
    fn a_resent_document_does_not_carry_a_waiting_intent_past_its_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = test_worker(dir.path());
        let key = DocKey {
            ns: Arc::new(Namespace {
                db: "d".into(),
                coll: "c".into(),
            }),
            id: Arc::new(crate::mark::id_doc(bson::Bson::Int32(1)).expect("an _id")),
        };
        let lane = &w.lanes[0];
        w.hold(5, 1);
        w.route(key.clone(), 5, 0, false);
        let sent = w.next_batch(lane).expect("the plain mark goes out");
        // While it is on its way, a pre-write mark of the same document:
        // its write may commit only later, so it waits for its post mark.
        w.hold(6, 1);
        w.route(key.clone(), 6, 0, true);
        // Another process changed the document meanwhile: send it again.
        w.settle(lane, sent, vec![DocOutcome::Superseded]);
        let resent = w
            .next_batch(lane)
            .expect("the superseded document goes out again");
        w.settle(lane, resent, vec![DocOutcome::Upserted]);
        // That send may have read before the intent's write: its position
        // must outlive it, or a crash before the post mark loses the write.
        assert!(
            lock(&w.inflight).contains_key(&6),
            "the intent's position was released by a send that may have read before its write"
        );
        assert!(!lock(&w.inflight).contains_key(&5));
    }
}
