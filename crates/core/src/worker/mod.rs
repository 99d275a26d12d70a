//! The drain worker: a dispatcher takes marks from the queue in journal
//! order and routes each document to a lane by hash, so one document is
//! always handled by one lane, one batch at a time (per-document order).
//! Lanes coalesce marks of the same document, apply batches through the
//! [`Applier`], retry transient failures without limit and dead-letter
//! documents Atlas keeps refusing. The dispatcher alone computes the
//! checkpoint: the first journal position not yet applied.
//!
//! Where each part of `impl Worker` lives:
//! - this file: the shared state, `new`, routing (`route`, `lane_of`), the
//!   in-flight bookkeeping (`hold`, `release`, `pending`) and `send_held_intents`;
//! - `dispatcher.rs`: `run_dispatcher` (queue → lanes, checkpoint, fsync),
//!   `dispatch`, and the collection scans (`queue_scan`, `start_scan`,
//!   `scan_collection`, `scan_finished`, `intent_expired`);
//! - `lane.rs`: `run_lane` (one lane's loop), `next_batch`, `apply_until_done`,
//!   `settle`, `dead_letter`, `requeue`, `carry_intents`, `finish`.
//!
//! Each file imports what it uses by name (no `use super::*`).

use crate::apply::Applier;
use crate::deadletter::DeadLetterStore;
use crate::mark::{canonical_id_bytes, Namespace};
use crate::metrics::Metrics;
use crate::queue::MarkQueue;
use bson::RawDocumentBuf;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest one batch may take before it is abandoned and resent.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Batches one lane has in flight at once: the next batches read local while
/// earlier ones are on their way to Atlas, so the local read hides behind
/// the link, and `lanes × LANE_DEPTH × batch` documents fill a slow link's
/// bandwidth-delay product even at the guide's `SYNC_BATCH_SIZE=100`.
pub const LANE_DEPTH: usize = 8;

/// Identity of a document: namespace + `{_id}` bytes.
#[derive(Clone)]
pub struct DocKey {
    pub ns: Arc<Namespace>,
    pub id: Arc<RawDocumentBuf>,
}

// Identity follows the server's matching: Int32 7, Int64 7 and Double 7.0
// are one document, so they share one lane entry (one batch at a time).
impl PartialEq for DocKey {
    fn eq(&self, o: &Self) -> bool {
        self.ns == o.ns && canonical_id_bytes(&self.id) == canonical_id_bytes(&o.id)
    }
}
impl Eq for DocKey {}
impl Hash for DocKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.ns.hash(h);
        canonical_id_bytes(&self.id).hash(h);
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
    /// Documents of the lane's batches in flight: a newer mark of one waits
    /// until that batch settles (one batch per document at a time).
    sending: HashSet<DocKey>,
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
    pub urgent: Arc<AtomicUsize>,
    /// Everything before this journal position is applied or dead-lettered.
    pub done_before: tokio::sync::watch::Sender<u64>,
    pub dispatcher_wake: tokio::sync::Notify,
    pub scanner: Mutex<Option<CollectionScanner>>,
    /// Collection scans running, and finished so far (flush re-checks when
    /// a scan finished while it waited, since its repairs are new marks).
    pub active_scans: AtomicUsize,
    pub scans_completed: AtomicUsize,
    /// Per collection: whether a scan runs and the one waiting behind it.
    scans: Mutex<HashMap<Arc<Namespace>, ScanSlot>>,
    /// Waiting scans over all collections.
    pub scans_waiting: AtomicUsize,
}

/// The collection scans of one namespace: one running, at most one waiting.
struct ScanSlot {
    running: bool,
    waiting: Option<WaitingScan>,
}

/// A scan waiting to start: the newest collection mark's position.
struct WaitingScan {
    seq: u64,
    /// Only pre-write marks so far: held until a plain mark or the timeout.
    intent: bool,
}

impl ScanSlot {
    /// Turns the waiting scan into the running one.
    fn take_waiting(&mut self, waiting: &AtomicUsize) -> Option<WaitingScan> {
        let w = self.waiting.take()?;
        waiting.fetch_sub(1, SeqCst);
        self.running = true;
        Some(w)
    }
}

/// The lane of a document among `lanes`: by namespace and canonical `_id`.
fn lane_for(key: &DocKey, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

use crate::poison::lock;

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
        // A flush wants the backlog now: the read gate stops sharing for it.
        let urgent = Arc::new(AtomicUsize::new(0));
        applier.read_gate.hurry_when(urgent.clone());
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
            urgent,
            done_before: tokio::sync::watch::channel(start).0,
            dispatcher_wake: tokio::sync::Notify::new(),
            scanner: Mutex::new(None),
            active_scans: AtomicUsize::new(0),
            scans_completed: AtomicUsize::new(0),
            scans: Mutex::new(HashMap::new()),
            scans_waiting: AtomicUsize::new(0),
        })
    }

    /// Documents taken from the queue but not yet applied.
    pub fn pending(&self) -> usize {
        self.pending_docs.load(Relaxed)
    }

    /// Collection scans running or waiting to run.
    pub fn scans_in_flight(&self) -> usize {
        self.active_scans.load(SeqCst) + self.scans_waiting.load(SeqCst)
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
        self.applier.read_gate.wake();
        self.queue.notify.notify_one();
        for l in &self.lanes {
            l.wake.notify_one();
        }
    }

    fn lane_of(&self, key: &DocKey) -> usize {
        lane_for(key, self.lanes.len())
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

    /// Sends intents now instead of holding them for their post-write marks.
    /// Used at the in-flight cap with marks waiting: those post marks may be
    /// among the waiting ones, which cannot be taken while held intents fill
    /// the cap (it would stall every collection for `intent_delay`). Sending
    /// early is what the delay's expiry does anyway; the post mark, once
    /// taken, reads again after the write.
    fn send_held_intents(self: &Arc<Self>) {
        // A waiting collection intent ends its wait too, as its timer would.
        let expired: Vec<(Arc<Namespace>, u64)> = lock(&self.scans)
            .iter()
            .filter_map(|(ns, slot)| {
                slot.waiting
                    .as_ref()
                    .filter(|w| w.intent)
                    .map(|w| (ns.clone(), w.seq))
            })
            .collect();
        for (ns, seq) in expired {
            self.intent_expired(ns, seq);
        }
        for lane in &self.lanes {
            let mut st = lock(&lane.state);
            let mut released = false;
            for doc in st.docs.values_mut() {
                if doc.intent && doc.attempts == 0 && doc.not_before.is_some() {
                    doc.not_before = None;
                    released = true;
                }
            }
            drop(st);
            if released {
                lane.wake.notify_one();
            }
        }
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
}

mod dispatcher;
mod lane;

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Bson;

    /// A worker over an empty journal, one lane, no batching delay and a
    /// 20 ms `intent_delay`. No server is contacted unless a lane runs.
    pub(in crate::worker) fn test_worker(dir: &std::path::Path) -> Arc<Worker> {
        test_worker_with(dir, |_| {})
    }

    /// `test_worker` with its settings changed by `tune`.
    pub(in crate::worker) fn test_worker_with(
        dir: &std::path::Path,
        tune: impl FnOnce(&mut WorkerSettings),
    ) -> Arc<Worker> {
        use crate::clients::LazyClient;
        use crate::journal::{Journal, JournalConfig};
        let (journal, recovery) = Journal::open(JournalConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 1 << 20,
            fsync_interval: Duration::from_secs(1),
            persist: false,
        })
        .expect("journal");
        let queue = Arc::new(MarkQueue::new(Arc::new(journal), 64, recovery.start, 0));
        let nowhere = || {
            Arc::new(LazyClient::new(
                "mongodb://127.0.0.1:1",
                "test",
                Duration::from_millis(10),
            ))
        };
        let applier = Arc::new(Applier {
            local: nowhere(),
            atlas: nowhere(),
            read_mode: tokio::sync::OnceCell::new(),
            write_limit: tokio::sync::OnceCell::new(),
            atlas_db: Arc::new(|db: &str| db.to_owned()),
            scope: Default::default(),
            verify_after_ack: false,
            read_gate: Arc::new(crate::read_limit::ReadGate::new(
                4,
                true,
                Default::default(),
                Default::default(),
            )),
        });
        let mut settings = WorkerSettings {
            batch_size: 10,
            interval: Duration::ZERO,
            max_retries: 1,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            fsync_interval: Duration::from_secs(1),
            intent_delay: Duration::from_millis(20),
            inflight_cap: 100,
        };
        tune(&mut settings);
        Worker::new(
            queue,
            Arc::new(Metrics::default()),
            Arc::new(DeadLetterStore::open(None).expect("store")),
            applier,
            settings,
            1,
            // Every position below this is applied: scans start at once.
            u64::MAX,
        )
    }

    fn key(ns: &Arc<Namespace>, id: Bson) -> DocKey {
        DocKey {
            ns: ns.clone(),
            id: Arc::new(crate::mark::id_doc(id).expect("an _id")),
        }
    }

    #[test]
    fn numeric_ids_equal_across_types_share_one_lane_and_entry() {
        let ns = Arc::new(Namespace {
            db: "d".into(),
            coll: "c".into(),
        });
        for n in [0i64, 7, -3, 1 << 40] {
            let forms = [
                key(&ns, Bson::Int64(n)),
                key(&ns, Bson::Double(n as f64)),
                key(&ns, Bson::Int32(n as i32)),
            ];
            let forms = if i32::try_from(n).is_ok() {
                &forms[..]
            } else {
                &forms[..2]
            };
            for lanes in 1..=32 {
                let first = lane_for(&forms[0], lanes);
                assert!(
                    forms.iter().all(|k| lane_for(k, lanes) == first),
                    "{n} over {lanes} lanes"
                );
            }
            assert!(forms.iter().all(|k| *k == forms[0]), "{n}");
        }
        assert!(key(&ns, Bson::Double(-0.0)) == key(&ns, Bson::Int32(0)));
        // Different values and non-numbers stay apart.
        assert!(key(&ns, Bson::Int32(7)) != key(&ns, Bson::Double(7.5)));
        assert!(key(&ns, Bson::Int32(7)) != key(&ns, Bson::String("7".into())));
    }
}
