//! The drain worker: a dispatcher takes marks from the queue in journal
//! order and routes each document to a lane by hash, so one document is
//! always handled by one lane, one batch at a time (per-document order).
//! Lanes coalesce marks of the same document, apply batches through the
//! [`Applier`], retry transient failures without limit and dead-letter
//! documents Atlas keeps refusing. The dispatcher alone computes the
//! checkpoint: the first journal position not yet applied.

use crate::apply::{Applier, BatchDoc, DocOutcome};
use crate::classify::Backoff;
use crate::deadletter::DeadLetterStore;
use crate::mark::{Mark, MarkKind, Namespace};
use crate::metrics::{now_ms, Metrics};
use crate::queue::MarkQueue;
use bson::RawDocumentBuf;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest one batch may take before it is abandoned and resent.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Identity of a document: namespace + `{_id}` bytes.
#[derive(Clone)]
pub struct DocKey {
    pub ns: Arc<Namespace>,
    pub id: Arc<RawDocumentBuf>,
}

impl PartialEq for DocKey {
    fn eq(&self, o: &Self) -> bool {
        self.ns == o.ns && self.id.as_bytes() == o.id.as_bytes()
    }
}
impl Eq for DocKey {}
impl Hash for DocKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.ns.hash(h);
        self.id.as_bytes().hash(h);
    }
}

/// A document waiting in a lane, with every journal position that asked for it.
struct PendingDoc {
    /// Only intents so far: held until `not_before` unless a later mark comes.
    intent: bool,
    /// Intents that joined an entry already waiting to be sent: that send may
    /// read before their write commits, so they outlive it (see `settle`).
    later_intents: Vec<u64>,
    seqs: Vec<u64>,
    first_enqueued_ms: u64,
    attempts: u32,
    not_before: Option<Instant>,
}

#[derive(Default)]
struct LaneState {
    docs: HashMap<DocKey, PendingDoc>,
    order: VecDeque<DocKey>,
    oldest: Option<Instant>,
}

struct Lane {
    state: Mutex<LaneState>,
    wake: tokio::sync::Notify,
}

/// Settings the worker reads at run time.
pub struct WorkerSettings {
    pub batch_size: usize,
    pub interval: Duration,
    pub max_retries: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub fsync_interval: Duration,
    /// Longest an intent (pre-write mark) waits for its post-write mark.
    pub intent_delay: Duration,
    /// Documents the lanes may hold at once (part of the memory budget).
    pub inflight_cap: usize,
}

/// Called for a collection mark: reconciles the collection by enqueueing a
/// (journaled) mark for every document that differs; returns how many.
pub type CollectionScanner = Arc<
    dyn Fn(Arc<Namespace>) -> futures_util::future::BoxFuture<'static, Result<u64, String>>
        + Send
        + Sync,
>;

pub struct Worker {
    pub queue: Arc<MarkQueue>,
    pub metrics: Arc<Metrics>,
    pub dead: Arc<DeadLetterStore>,
    pub applier: Arc<Applier>,
    pub settings: WorkerSettings,
    lanes: Vec<Lane>,
    /// journal position -> how many pending documents still refer to it
    inflight: Mutex<BTreeMap<u64, u32>>,
    pending_docs: AtomicUsize,
    pub paused: AtomicBool,
    pub shutdown: AtomicBool,
    /// Number of `flush()` callers waiting: lanes skip the batching delay.
    pub urgent: AtomicUsize,
    /// Everything before this journal position is applied or dead-lettered.
    pub done_before: tokio::sync::watch::Sender<u64>,
    pub dispatcher_wake: tokio::sync::Notify,
    pub scanner: Mutex<Option<CollectionScanner>>,
    /// Collection scans running, and finished so far (flush re-checks when
    /// a scan finished while it waited, since its repairs are new marks).
    pub active_scans: AtomicUsize,
    pub scans_completed: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Worker {
    pub fn new(
        queue: Arc<MarkQueue>,
        metrics: Arc<Metrics>,
        dead: Arc<DeadLetterStore>,
        applier: Arc<Applier>,
        settings: WorkerSettings,
        lanes: usize,
        start: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue,
            metrics,
            dead,
            applier,
            settings,
            lanes: (0..lanes.max(1))
                .map(|_| Lane {
                    state: Mutex::new(LaneState::default()),
                    wake: tokio::sync::Notify::new(),
                })
                .collect(),
            inflight: Mutex::new(BTreeMap::new()),
            pending_docs: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            urgent: AtomicUsize::new(0),
            done_before: tokio::sync::watch::channel(start).0,
            dispatcher_wake: tokio::sync::Notify::new(),
            scanner: Mutex::new(None),
            active_scans: AtomicUsize::new(0),
            scans_completed: AtomicUsize::new(0),
        })
    }

    /// Documents taken from the queue but not yet applied.
    pub fn pending(&self) -> usize {
        self.pending_docs.load(Relaxed)
    }

    /// Wall-clock ms of the oldest mark still waiting in a lane.
    pub fn oldest_pending_ms(&self) -> Option<u64> {
        self.lanes
            .iter()
            .filter_map(|l| {
                lock(&l.state)
                    .docs
                    .values()
                    .map(|d| d.first_enqueued_ms)
                    .min()
            })
            .min()
    }

    /// Wakes every task (used by resume, flush and shutdown).
    pub fn wake_all(&self) {
        self.dispatcher_wake.notify_one();
        self.queue.notify.notify_one();
        for l in &self.lanes {
            l.wake.notify_one();
        }
    }

    fn lane_of(&self, key: &DocKey) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    fn hold(&self, seq: u64, refs: u32) {
        *lock(&self.inflight).entry(seq).or_insert(0) += refs;
    }

    fn release(&self, seqs: &[u64]) {
        let mut map = lock(&self.inflight);
        for s in seqs {
            if let std::collections::btree_map::Entry::Occupied(mut e) = map.entry(*s) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        drop(map);
        self.dispatcher_wake.notify_one();
    }

    /// Adds one document to its lane (coalescing with a waiting mark of it).
    fn route(&self, key: DocKey, seq: u64, enqueued_ms: u64, intent: bool) {
        let lane = &self.lanes[self.lane_of(&key)];
        let mut st = lock(&lane.state);
        let coalesced = match st.docs.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                self.metrics.coalesced.fetch_add(1, Relaxed);
                let waiting = e.get_mut();
                if intent && !waiting.intent {
                    waiting.later_intents.push(seq);
                    false // held: released once a read after its write is sent
                } else {
                    if !intent {
                        // A mark journaled after the intents: their writes are
                        // done, so this entry may go now and covers them.
                        if waiting.intent && waiting.attempts == 0 {
                            waiting.not_before = None;
                        }
                        waiting.intent = false;
                        let mut later = std::mem::take(&mut waiting.later_intents);
                        waiting.seqs.append(&mut later);
                        lane.wake.notify_one();
                    }
                    true
                }
            }
            Entry::Vacant(v) => {
                v.insert(PendingDoc {
                    intent,
                    later_intents: Vec::new(),
                    seqs: vec![seq],
                    first_enqueued_ms: enqueued_ms,
                    attempts: 0,
                    not_before: intent.then(|| Instant::now() + self.settings.intent_delay),
                });
                st.order.push_back(key);
                st.oldest.get_or_insert_with(Instant::now);
                self.pending_docs.fetch_add(1, Relaxed);
                false
            }
        };
        // Wake the lane when it has to act: at once (no interval), when it
        // was idle (it starts the interval clock), or when a batch is full.
        let wake = self.settings.interval.is_zero()
            || st.docs.len() == 1
            || st.docs.len() >= self.settings.batch_size;
        drop(st);
        if coalesced {
            // The waiting entry holds an older position and has not been
            // read yet, so this mark's write is covered when it applies: no
            // need to keep this position (memory stays flat for hot docs).
            self.release(&[seq]);
        } else if wake {
            lane.wake.notify_one();
        }
    }

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
            let room = cap.saturating_sub(self.pending());
            let can_take = !self.paused.load(Acquire) && room > 0;
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
                match self.queue.journal().ack_before(checkpoint) {
                    Ok(()) => acked = checkpoint,
                    Err(e) => tracing::error!("writing the journal checkpoint failed: {e}"),
                }
                last_ack = Instant::now();
            }
            if !self.settings.fsync_interval.is_zero()
                && last_sync.elapsed() >= self.settings.fsync_interval
            {
                if let Err(e) = self.queue.journal().sync() {
                    tracing::error!("journal fsync failed: {e}");
                }
                last_sync = Instant::now();
            }
            if got == 0 {
                if can_take {
                    self.queue.wake_armed.store(true, Release);
                    // A mark that arrived between take() and arming found
                    // the wake disarmed: look again instead of sleeping.
                    if self.queue.wants_dispatcher() {
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
        if let Err(e) = self.queue.journal().ack_before(checkpoint) {
            tracing::error!("writing the final journal checkpoint failed: {e}");
        }
        if let Err(e) = self.queue.journal().sync() {
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
            MarkKind::Collection => {
                // Held until the scan has journaled a mark for every difference.
                self.hold(m.seq, 1);
                self.active_scans.fetch_add(1, SeqCst);
                let scanner = lock(&self.scanner).clone();
                let me = self.clone();
                tokio::spawn(async move { me.scan_collection(scanner, m).await });
            }
        }
    }

    async fn scan_collection(self: Arc<Self>, scanner: Option<CollectionScanner>, m: Mark) {
        // Scan only once every earlier mark is applied: a batch still in
        // flight could otherwise land after the scan looked and leave a state
        // that no later mark corrects (this mark *is* the correction).
        let mut done = self.done_before.subscribe();
        let _ = done
            .wait_for(|d| *d >= m.seq || self.shutdown.load(Acquire))
            .await;
        if self.shutdown.load(Acquire) {
            self.active_scans.fetch_sub(1, SeqCst);
            return; // not released: replayed from the journal at next start
        }
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        loop {
            let Some(scanner) = scanner.as_ref() else {
                tracing::error!(
                    "collection mark for {} ignored: no reconciler configured",
                    m.ns
                );
                break;
            };
            match scanner(m.ns.clone()).await {
                Ok(repairs) => {
                    tracing::info!(
                        "reconciled {}: {repairs} document(s) queued for repair",
                        m.ns
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!("reconciling {} failed, will retry: {e}", m.ns);
                    if self.shutdown.load(Acquire) {
                        // Not released: the mark stays in the journal for the next start.
                        self.active_scans.fetch_sub(1, SeqCst);
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        self.scans_completed.fetch_add(1, SeqCst);
        self.active_scans.fetch_sub(1, SeqCst);
        self.release(&[m.seq]);
    }

    /// Picks the next batch of a lane, or None with how long to wait.
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
            let ready = st
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
        if batch.is_empty() {
            return Err(soonest.map(|t| t.saturating_duration_since(now)));
        }
        Ok(batch)
    }

    /// One lane: batches until shutdown.
    pub async fn run_lane(self: Arc<Self>, index: usize) {
        let lane = &self.lanes[index];
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        loop {
            if self.shutdown.load(Acquire) {
                return;
            }
            if self.paused.load(Acquire) {
                lane.wake.notified().await;
                continue;
            }
            let batch = match self.next_batch(lane) {
                Ok(b) => b,
                Err(wait) => {
                    let wait = wait.unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        _ = lane.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            self.apply_until_done(lane, batch, &mut backoff).await;
        }
    }

    async fn apply_until_done(
        &self,
        lane: &Lane,
        batch: Vec<(DocKey, PendingDoc)>,
        backoff: &mut Backoff,
    ) {
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
                Err(crate::apply::TransientFailure {
                    message: format!("batch timed out after {} s", BATCH_TIMEOUT.as_secs()),
                })
            });
            match attempt {
                Ok(outcomes) => {
                    backoff.reset();
                    self.metrics.record_batch(true);
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
                    self.metrics.last_success_ms.store(now_ms(), Relaxed);
                    self.settle(lane, batch, outcomes);
                    return;
                }
                Err(failure) => {
                    self.metrics.record_batch(false);
                    self.metrics.transient_failures.fetch_add(1, Relaxed);
                    let newly_down = self.metrics.set_atlas_connected(false).is_some();
                    self.metrics.set_last_error(Some(failure.message.clone()));
                    let delay = backoff.next_delay();
                    // One warning per outage; the retries themselves are debug noise.
                    if newly_down {
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
                newer.seqs.append(&mut doc.seqs);
                newer.later_intents.append(&mut doc.later_intents);
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
