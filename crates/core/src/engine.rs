//! The engine: owns the tokio runtime, the journal-backed queue, the drain
//! worker, the dead-letter store and the metrics. Everything the binding
//! calls goes through here.

use crate::apply::Applier;
use crate::clients::LazyClient;
use crate::config::EngineConfig;
use crate::deadletter::{DeadLetter, DeadLetterFilter, DeadLetterStore};
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::logging::{dispatcher, LogSink};
use crate::lost::LostMarks;
use crate::mark::{validate_namespace, MarkKind};
use crate::metrics::{EngineView, JournalView, Metrics};
use crate::queue::{MarkQueue, NewMark};
use crate::read_limit::AppActivity;
use crate::redact::redact_uri;
use crate::worker::{Worker, WorkerSettings};
use serde_json::Value;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

mod capture;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Invalid(String),
    #[error("the sync engine is closed")]
    Closed,
    #[error("{0}")]
    Io(String),
}

impl EngineError {
    /// The `code` this error carries to JS (`err.code`), one per variant.
    pub fn code(&self) -> &'static str {
        match self {
            // createSync waits and retries while a previous holder exits.
            EngineError::Journal(crate::journal::JournalError::Locked { .. }) => "ERR_SYNC_LOCKED",
            EngineError::Journal(_) => "ERR_SYNC_JOURNAL",
            EngineError::Invalid(_) => "ERR_SYNC_INVALID",
            EngineError::Closed => "ERR_SYNC_CLOSED",
            EngineError::Io(_) => "ERR_SYNC_IO",
        }
    }
}

/// A running engine. Cheap to share; `close` stops it.
pub struct Engine {
    pub cfg: EngineConfig,
    pub queue: Arc<MarkQueue>,
    pub worker: Arc<Worker>,
    pub metrics: Arc<Metrics>,
    pub dead: Arc<DeadLetterStore>,
    pub local: Arc<LazyClient>,
    pub atlas: Arc<LazyClient>,
    pub dispatch: tracing::Dispatch,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub recovered: u64,
    pub jobs: crate::jobs::JobRegistry,
    /// Marks that could not be journaled, and the reconciles they call for.
    pub lost: Arc<LostMarks>,
    /// Set once `close` is done: from then on enqueue is refused. While the
    /// engine drains (shutdown set, not closed yet) marks are still journaled.
    closed: std::sync::atomic::AtomicBool,
    /// The app's writes as `enqueue` takes them: the drain shares the local
    /// server while the app writes (read_limit::ReadGate).
    app: Arc<AppActivity>,
    /// Where the JS layer writes marks without a call (None: every mark is a call).
    ring: Option<crate::ring::CaptureRing>,
    /// Whether JS may write into `ring` (else it was only replayed).
    ring_shared: bool,
    /// The thread that reads `ring` (capture::spawn_ring_reader), joined at close.
    ring_reader: Mutex<Option<capture::RingReader>>,
}

impl Engine {
    /// Opens the journal (taking the data-dir lock), recovers, connects in the
    /// background and starts the worker. Never waits on the network.
    pub fn open(cfg: EngineConfig, sink: Arc<dyn LogSink>) -> Result<Arc<Engine>, EngineError> {
        let secrets = vec![cfg.local_uri.clone(), cfg.atlas_uri.clone()];
        let dispatch = dispatcher(sink, cfg.log_level, secrets);
        tracing::dispatcher::with_default(&dispatch, || Self::open_inner(cfg, dispatch.clone()))
    }

    fn open_inner(
        cfg: EngineConfig,
        dispatch: tracing::Dispatch,
    ) -> Result<Arc<Engine>, EngineError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            EngineError::Io(format!(
                "cannot create data dir {}: {e}",
                cfg.data_dir.display()
            ))
        })?;
        let (journal, recovery) = Journal::open(JournalConfig {
            dir: cfg.data_dir.join("journal"),
            segment_bytes: cfg.segment_bytes,
            fsync_interval: cfg.fsync_interval,
            persist: cfg.persist_queue,
        })?;
        let metrics = Arc::new(Metrics::default());
        let (ring, from_ring, ring_shared) = capture::open_ring(&cfg);
        for c in &recovery.corrupt {
            tracing::error!(
                "journal record skipped: segment {} offset {}: {}",
                c.segment,
                c.offset,
                c.reason
            );
        }
        metrics
            .corrupt_records
            .fetch_add(recovery.corrupt.len() as u64, Relaxed);
        let recovered = recovery.records + from_ring.marks.len() as u64;
        metrics.recovered.store(recovered, Relaxed);
        if cfg.persist_queue {
            tracing::info!("✓ Loaded {recovered} operations from persisted queue");
        }
        let dead_path = cfg
            .persist_queue
            .then(|| cfg.data_dir.join("dead-letters.json"));
        let dead =
            Arc::new(DeadLetterStore::open(dead_path).map_err(|e| EngineError::Io(e.to_string()))?);
        let journal = Arc::new(journal);
        // SYNC_QUEUE_MAX_SIZE bounds all marks in memory: the lanes get up to
        // half of it (enough for a few batches each), the queue the rest.
        let lanes = cfg.concurrency.max(1);
        let half = (cfg.queue_max_size / 2).max(1);
        // Room for each lane's batches in flight plus two forming behind them.
        let per_lane = crate::worker::LANE_DEPTH + 2;
        let inflight_cap = (cfg.batch_size * lanes * per_lane).clamp(1, half);
        let queue_cap = cfg.queue_max_size.saturating_sub(inflight_cap).max(1);
        let queue = Arc::new(MarkQueue::new(
            journal,
            queue_cap,
            recovery.start,
            recovery.records,
        ));
        let local = Arc::new(LazyClient::new(
            &cfg.local_uri,
            "local",
            cfg.connect_timeout,
        ));
        // Every lane's batches in flight at once, plus room for a job's reads.
        let atlas_pool = u32::try_from(lanes * crate::worker::LANE_DEPTH + 4).unwrap_or(u32::MAX);
        let atlas = Arc::new(
            LazyClient::new(&cfg.atlas_uri, "Atlas", cfg.connect_timeout)
                .compressed()
                .pool_size(atlas_pool),
        );
        let map_cfg = cfg.clone();
        let app = Arc::new(AppActivity::for_share(cfg.drain_share));
        let applier = Arc::new(Applier {
            local: local.clone(),
            atlas: atlas.clone(),
            read_mode: tokio::sync::OnceCell::new(),
            write_limit: tokio::sync::OnceCell::new(),
            atlas_db: Arc::new(move |db: &str| map_cfg.atlas_db_for(db)),
            scope: cfg.scope.clone(),
            verify_after_ack: cfg.verify_after_ack,
            read_gate: Arc::new(
                crate::read_limit::ReadGate::new(
                    cfg.local_read_limit,
                    cfg.local_read_adaptive,
                    metrics.local_read_limit.clone(),
                    metrics.drain_share.clone(),
                )
                .sharing_with_app(cfg.drain_share, app.clone()),
            ),
        });
        let worker = Worker::new(
            queue.clone(),
            metrics.clone(),
            dead.clone(),
            applier,
            WorkerSettings {
                batch_size: cfg.batch_size.max(1),
                interval: cfg.worker_interval,
                max_retries: cfg.max_retries,
                backoff_min: cfg.backoff_min,
                backoff_max: cfg.backoff_max,
                fsync_interval: cfg.fsync_interval,
                intent_delay: cfg.intent_delay,
                inflight_cap,
            },
            cfg.concurrency,
            recovery.start,
        );
        let thread_dispatch = dispatch.clone();
        // One worker: the drain is bound by the link, and one thread keeps it off
        // the app's other cores and saves the hand-offs between two (a third of
        // its CPU per write). Nothing on it blocks: disk syncs go through
        // `blocking::off_runtime`, DNS through tokio's blocking pool.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dualsync")
            .enable_all()
            .on_thread_start(move || {
                // Leaked guard: the thread lives exactly as long as the runtime.
                std::mem::forget(tracing::dispatcher::set_default(&thread_dispatch));
            })
            .build()
            .map_err(|e| EngineError::Io(format!("cannot start the sync runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let engine = Arc::new(Engine {
            cfg,
            queue,
            worker: worker.clone(),
            metrics,
            dead,
            local,
            atlas,
            dispatch,
            runtime: Mutex::new(Some(runtime)),
            handle: handle.clone(),
            tasks: Mutex::new(Vec::new()),
            recovered,
            jobs: Default::default(),
            lost: Default::default(),
            closed: Default::default(),
            app,
            ring,
            ring_shared,
            ring_reader: Mutex::new(None),
        });
        engine.take_from_ring(from_ring);
        // Journaled (or remembered as lost): the ring may move past them now.
        engine.settle_ring();
        if let Ok(mut slot) = worker.scanner.lock() {
            *slot = Some(crate::jobs::collection_scanner(&engine));
        }
        let mut tasks = vec![handle.spawn(worker.clone().run_dispatcher())];
        for lane in 0..engine.cfg.concurrency.max(1) {
            tasks.push(handle.spawn(worker.clone().run_lane(lane)));
        }
        tasks.push(handle.spawn(Self::announce(engine.clone())));
        if engine.ring_shared {
            match capture::spawn_ring_reader(&engine) {
                Some(reader) => {
                    if let Ok(mut r) = engine.ring_reader.lock() {
                        *r = Some(reader);
                    }
                }
                None => tasks.push(handle.spawn(capture::ring_task(Arc::downgrade(&engine)))),
            }
        }
        tasks.push(handle.spawn(crate::lost::requeue_loop(
            engine.lost.clone(),
            engine.queue.clone(),
            worker.clone(),
        )));
        if let Ok(mut t) = engine.tasks.lock() {
            *t = tasks;
        }
        tracing::info!("✓ Sync worker started");
        Ok(engine)
    }

    /// Logs the connection lines operators look for, once each side answers.
    async fn announce(engine: Arc<Engine>) {
        let ping = |client: Arc<LazyClient>| async move {
            let c = client.get().await?;
            c.database("admin")
                .run_command(bson::doc! { "ping": 1 })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let mut local_done = false;
        let mut atlas_done = false;
        let mut delay = Duration::from_millis(200);
        while !(engine.worker.shutdown.load(Acquire) || local_done && atlas_done) {
            if !local_done {
                match ping(engine.local.clone()).await {
                    Ok(()) => {
                        tracing::info!("✓ Connected to local MongoDB: {}", engine.cfg.local_db);
                        local_done = true;
                    }
                    Err(e) => tracing::warn!(
                        "local MongoDB not reachable yet ({}): {e}",
                        redact_uri(engine.local.uri())
                    ),
                }
            }
            if !atlas_done {
                match ping(engine.atlas.clone()).await {
                    Ok(()) => {
                        tracing::info!("✓ Connected to MongoDB Atlas: {}", engine.cfg.atlas_db);
                        let _ = engine.metrics.set_atlas_connected(true);
                        atlas_done = true;
                    }
                    Err(e) => {
                        let _ = engine.metrics.set_atlas_connected(false);
                        engine.metrics.set_last_error(Some(e.clone()));
                        tracing::warn!(
                            "MongoDB Atlas not reachable yet ({}): {e}",
                            redact_uri(engine.atlas.uri())
                        );
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    /// Validates and journals marks. Returns the journal position after them.
    pub fn enqueue(&self, marks: Vec<NewMark>) -> Result<u64, EngineError> {
        if self.is_closed() {
            return Err(EngineError::Closed);
        }
        for m in &marks {
            check_mark(m)?;
        }
        // The ring's marks are older than these (an intent there, its post mark here).
        self.ingest_ring();
        self.journal_marks(marks)
    }

    /// Journals checked marks; a failure is remembered (lost marks) and logged.
    fn journal_marks(&self, marks: Vec<NewMark>) -> Result<u64, EngineError> {
        let marks: Vec<NewMark> = marks
            .into_iter()
            .filter(|m| !self.cfg.is_excluded(&m.coll))
            .collect();
        let n = marks.len() as u64;
        // An intent is followed by its write's post mark: count each write once.
        // Lazy: at a share of 1 `record` does not run it (no hashing per write).
        self.app.record(
            marks
                .iter()
                .filter(|m| m.kind == MarkKind::Document)
                .map(|m| doc_hash(&m.db, &m.coll, m.id.as_bytes())),
        );
        for m in &marks {
            self.metrics
                .collection(&m.db, &m.coll)
                .enqueued
                .fetch_add(1, Relaxed);
        }
        let namespaces: Vec<(String, String)> = match marks.first() {
            // Batches are usually one collection: don't copy names per mark.
            Some(f) if marks.iter().all(|m| m.db == f.db && m.coll == f.coll) => {
                vec![(f.db.clone(), f.coll.clone())]
            }
            _ => marks
                .iter()
                .map(|m| (m.db.clone(), m.coll.clone()))
                .collect(),
        };
        // The journal logs (e.g. a full-disk reclaim) from the app's thread: give it our dispatcher.
        let appended =
            tracing::dispatcher::with_default(&self.dispatch, || self.queue.enqueue(marks));
        let end = appended.map_err(|e| {
            let reason = e.to_string();
            self.lost.record(
                namespaces.iter().map(|(d, c)| (d.as_str(), c.as_str())),
                n,
                &reason,
            );
            tracing::dispatcher::with_default(&self.dispatch, || {
                tracing::error!(
                    "{n} mark(s) could not be journaled ({reason}); their collections will be reconciled once the journal takes writes again"
                )
            });
            EngineError::Io(reason)
        })?;
        self.metrics.enqueued.fetch_add(n, Relaxed);
        Ok(end)
    }

    /// Waits until everything enqueued before the call is applied (or
    /// dead-lettered). False on timeout.
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.ingest_ring();
        self.worker.urgent.fetch_add(1, SeqCst);
        self.worker.wake_all();
        let res = tokio::time::timeout(timeout, self.flush_inner()).await;
        self.worker.urgent.fetch_sub(1, SeqCst);
        res.is_ok()
    }

    async fn flush_inner(&self) {
        let mut rx = self.worker.done_before.subscribe();
        loop {
            let (scans_before, target) = flush_snapshot(
                || self.worker.scans_completed.load(SeqCst),
                || self.queue.journal().end(),
            );
            let _ = rx.wait_for(|done| *done >= target).await;
            // A collection scan that finished meanwhile journaled repair
            // marks after `target`: they belong to this flush too.
            if self.worker.active_scans.load(SeqCst) == 0
                && self.worker.scans_completed.load(SeqCst) == scans_before
            {
                return;
            }
            if self.worker.active_scans.load(SeqCst) > 0 {
                let _ = rx.changed().await;
            }
        }
    }

    pub fn pause(&self) {
        self.worker.paused.store(true, Release);
        tracing::dispatcher::with_default(&self.dispatch, || tracing::info!("sync paused"));
    }

    pub fn resume(&self) {
        self.worker.paused.store(false, Release);
        self.worker.wake_all();
        tracing::dispatcher::with_default(&self.dispatch, || tracing::info!("sync resumed"));
    }

    pub fn dead_letters(&self, filter: &DeadLetterFilter) -> Vec<DeadLetter> {
        self.dead.list(filter)
    }

    /// Re-queues matching dead letters; returns how many.
    pub fn retry_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, EngineError> {
        let taken = self
            .dead
            .take(filter)
            .map_err(|e| EngineError::Io(e.to_string()))?;
        let marks: Vec<NewMark> = taken
            .iter()
            .filter_map(|d| {
                Some(NewMark {
                    kind: MarkKind::Document,
                    db: d.db.clone(),
                    coll: d.collection.clone(),
                    id: d.id_doc()?,
                })
            })
            .collect();
        let n = marks.len();
        if let Err(e) = self.queue.enqueue(marks) {
            let _ = self.dead.restore(taken);
            return Err(EngineError::Io(e.to_string()));
        }
        Ok(n)
    }

    /// The metrics snapshot as JSON (built by `Metrics::engine_snapshot`).
    pub fn metrics(&self) -> Value {
        self.ingest_ring();
        let journal = self.queue.journal();
        let state = if self.is_closed() {
            "closed"
        } else if self.worker.shutdown.load(Acquire) {
            "closing"
        } else if self.worker.paused.load(Acquire) {
            "paused"
        } else {
            "running"
        };
        self.metrics.engine_snapshot(&EngineView {
            state,
            memory: self.queue.memory_len() as u64,
            disk: self.queue.disk_len(),
            in_flight: self.worker.pending() as u64,
            oldest_pending_ms: self.worker.oldest_pending_ms(),
            dead_letters: self.dead.len() as u64,
            scope: self.cfg.scope.snapshot(),
            lost_marks: self.lost.snapshot(),
            scans_running: self.worker.active_scans.load(SeqCst),
            scans_waiting: self.worker.scans_waiting.load(SeqCst),
            full_sync: self
                .jobs
                .running()
                .and_then(|j| serde_json::to_value(j.snapshot()).ok())
                .unwrap_or(Value::Null),
            journal: JournalView {
                persist: self.cfg.persist_queue,
                bytes: journal.disk_bytes(),
                segments: journal.segments() as u64,
                corrupt_records: journal.corrupt_skipped(),
                recovered: self.recovered,
                checkpoint: journal.checkpoint(),
                end: journal.end(),
            },
            secrets: [self.local.uri(), self.atlas.uri()],
        })
    }

    /// Stops the engine's runtime and waits (bounded) until its tasks are
    /// dropped, so the journal and its lock are released when this returns.
    /// Call after `close`, outside any async context.
    pub fn shutdown_runtime(&self) {
        let rt = self.runtime.lock().ok().and_then(|mut r| r.take());
        if let Some(rt) = rt {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    /// Drains for up to `drain_timeout`, then stops; what is left stays in
    /// the journal for the next start. Idempotent.
    pub async fn close(&self, drain_timeout: Duration) -> bool {
        if self.is_closed() || self.worker.shutdown.load(Acquire) {
            return true;
        }
        // A zero timeout still reports whether the backlog happened to be empty.
        let drained = self.flush(drain_timeout).await;
        self.worker.shutdown.store(true, Release);
        self.worker.wake_all();
        let tasks: Vec<JoinHandle<()>> = match self.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        // Tasks stuck on an unreachable Atlas are abandoned after a short
        // grace: their marks are still in the journal, and writes are idempotent.
        let grace = tokio::time::Instant::now() + Duration::from_millis(1500);
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(grace, t).await.is_err() {
                abort.abort();
            }
        }
        // The ring reader sees the shutdown once woken.
        let reader = self.ring_reader.lock().ok().and_then(|mut r| r.take());
        if let Some(reader) = reader {
            reader.stop(grace).await;
        }
        // The ring loop has stopped: take what JS wrote since the flush.
        self.ingest_ring();
        // The reminder loop has stopped: a last attempt to journal its
        // reminders, which live in memory only and would end with the process.
        tracing::dispatcher::with_default(&self.dispatch, || {
            crate::lost::requeue_at_close(&self.lost, &self.queue)
        });
        // Marks journaled while draining stay in the journal for the next start.
        self.closed.store(true, Release);
        tracing::dispatcher::with_default(&self.dispatch, || {
            tracing::info!(
                "sync engine closed ({})",
                if drained {
                    "drained"
                } else {
                    "backlog kept in journal"
                }
            )
        });
        drained
    }
}

/// Why a mark cannot be journaled, if it cannot.
fn check_mark(m: &NewMark) -> Result<(), EngineError> {
    validate_namespace(&m.db, &m.coll).map_err(|e| EngineError::Invalid(e.to_string()))?;
    if m.kind == MarkKind::Document && m.id.get("_id").ok().flatten().is_none() {
        return Err(EngineError::Invalid("id is required".into()));
    }
    Ok(())
}

/// A document's identity as one number, for telling the app's writes apart.
fn doc_hash(db: &str, coll: &str, id: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (db, coll, id).hash(&mut h);
    h.finish()
}

/// One flush round's reads: the completed-scan count, then the journal end.
/// A scan journals its repairs, then counts itself done, so read in this
/// order any scan that ends in between either has its repairs below the end
/// read or changes the count, and the flush loops (the other way round it
/// could do neither, and the flush returned before the repairs were applied).
fn flush_snapshot(
    scans: impl FnOnce() -> usize,
    journal_end: impl FnOnce() -> u64,
) -> (usize, u64) {
    let scans_before = scans();
    (scans_before, journal_end())
}

#[cfg(test)]
mod flush_tests {
    use super::flush_snapshot;
    use std::cell::RefCell;

    /// Scans completed, journal end, reads made: a scan that journals two
    /// repairs and counts itself done runs right after the first read.
    struct Race(RefCell<(usize, u64, u32)>);

    impl Race {
        fn read<T>(&self, pick: impl Fn(&(usize, u64, u32)) -> T) -> T {
            let mut s = self.0.borrow_mut();
            let v = pick(&s);
            s.2 += 1;
            if s.2 == 1 {
                s.1 += 2;
                s.0 += 1;
            }
            v
        }
    }

    #[test]
    fn a_scan_ending_between_the_two_reads_is_seen_by_the_flush() {
        let race = Race(RefCell::new((0, 10, 0)));
        let (before, target) = flush_snapshot(|| race.read(|s| s.0), || race.read(|s| s.1));
        let (scans_now, end_now, _) = *race.0.borrow();
        assert!(
            target >= end_now || before != scans_now,
            "the flush would wait to {target} and see no scan end, with repairs up to {end_now}"
        );
    }
}
