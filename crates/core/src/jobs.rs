//! Engine glue for the reconciler: full-sync / verify jobs (one at a time)
//! and the collection scans behind collection marks. Every repair becomes a
//! journaled mark, so Atlas keeps a single writer: the drain worker.

use crate::engine::{Engine, EngineError};
use crate::mark::{MarkKind, Namespace};
use crate::queue::{MarkQueue, NewMark};
use crate::reconcile::{
    scan_collection, spawn_job_when, ConnectFn, Diff, Job, JobOptions, RepairFn, ScanOptions,
    ScanProgress,
};
use crate::scope::ExtrasPolicy;
use crate::worker::CollectionScanner;
use bson::RawDocumentBuf;
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Jobs known to the engine: the running one and a few finished ones.
#[derive(Default)]
pub struct JobRegistry {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

const KEEP_FINISHED: usize = 20;
/// Repairs are journaled in chunks of this many marks (one write each).
const REPAIR_CHUNK: usize = 500;

impl JobRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        crate::poison::lock(&self.jobs)
    }

    pub fn running(&self) -> Option<Arc<Job>> {
        self.lock().iter().find(|j| !j.is_finished()).cloned()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().iter().find(|j| j.id() == id).cloned()
    }

    fn add(&self, job: Arc<Job>) {
        let mut jobs = self.lock();
        jobs.push_back(job);
        while jobs.len() > KEEP_FINISHED {
            match jobs.iter().position(|j| j.is_finished()) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
    }
}

fn repair_mark(ns: &Namespace, id: &RawDocumentBuf) -> NewMark {
    NewMark {
        kind: MarkKind::Document,
        db: ns.db.clone(),
        coll: ns.coll.clone(),
        id: id.clone(),
    }
}

impl Engine {
    /// Starts a verify (`dry_run`) or full-sync job, or returns the running one.
    /// `wait_limit`: how long it may wait for the servers before failing
    /// (`None`: as long as it takes, the app's case).
    pub fn start_job(
        &self,
        collections: Option<Vec<String>>,
        dry_run: bool,
        wait_limit: Option<Duration>,
    ) -> Result<Arc<Job>, EngineError> {
        if let Some(job) = self.jobs.running() {
            return Ok(job);
        }
        let connect = self.connect_fn();
        let queue = self.queue.clone();
        let lost = self.lost.clone();
        let db = self.cfg.local_db.clone();
        let repair: RepairFn = Arc::new(move |coll: &str, id: &RawDocumentBuf| {
            let ns = Namespace {
                db: db.clone(),
                coll: coll.to_owned(),
            };
            if let Err(e) = queue.enqueue(vec![repair_mark(&ns, id)]) {
                // The collection is reconciled again once the journal works.
                lost.record([(ns.db.as_str(), ns.coll.as_str())], 1, &e.to_string());
                tracing::error!("queueing a repair of {ns} failed: {e}");
            }
        });
        let opts = JobOptions {
            collections,
            dry_run,
            batch_size: 1000,
            sample_limit: 20,
        };
        let job = spawn_job_when(
            self.handle(),
            connect,
            wait_limit,
            self.cfg.excluded_collections.clone(),
            self.cfg.scope.clone(),
            opts,
            repair,
        );
        self.jobs.add(job.clone());
        Ok(job)
    }

    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.get(id)
    }

    /// The job's way to its databases: create both clients and ping both
    /// servers, on the runtime (never on the caller's thread).
    fn connect_fn(&self) -> ConnectFn {
        let local = self.local.clone();
        let atlas = self.atlas.clone();
        let (local_name, atlas_name) = (self.cfg.local_db.clone(), self.cfg.atlas_db.clone());
        Box::new(move || {
            let (local, atlas) = (local.clone(), atlas.clone());
            let (local_name, atlas_name) = (local_name.clone(), atlas_name.clone());
            Box::pin(async move {
                let ping = |c: &mongodb::Client, label: &str| {
                    let db = c.database("admin");
                    let label = label.to_owned();
                    async move {
                        db.run_command(bson::doc! { "ping": 1 })
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("{label} not reachable: {e}"))
                    }
                };
                let l = local.get().await?.clone();
                ping(&l, "local MongoDB").await?;
                let a = atlas.get().await?.clone();
                ping(&a, "MongoDB Atlas").await?;
                Ok((l.database(&local_name), a.database(&atlas_name)))
            })
        })
    }
}

/// The scanner the worker runs for a collection mark: compare the whole
/// collection and journal a mark for every difference.
pub fn collection_scanner(engine: &Engine) -> CollectionScanner {
    let local = engine.local.clone();
    let atlas = engine.atlas.clone();
    let queue: Arc<MarkQueue> = engine.queue.clone();
    let cfg = engine.cfg.clone();
    Arc::new(move |ns: Arc<Namespace>| {
        let local = local.clone();
        let atlas = atlas.clone();
        let queue = queue.clone();
        let atlas_db = cfg.atlas_db_for(&ns.db);
        let scope = cfg.scope.clone();
        Box::pin(async move {
            let l = local
                .get()
                .await?
                .database(&ns.db)
                .collection::<RawDocumentBuf>(&ns.coll);
            let a = atlas
                .get()
                .await?
                .database(&atlas_db)
                .collection::<RawDocumentBuf>(&ns.coll);
            let progress = ScanProgress::default();
            let cancel = AtomicBool::new(false);
            let mut pending: Vec<NewMark> = Vec::new();
            let mut queued = 0u64;
            let mut failed: Option<String> = None;
            let policy = scope.extras_policy(&ns.coll);
            let mut kept = 0u64;
            let report = scan_collection(
                &l,
                &a,
                scope.filter(&ns.coll),
                &ScanOptions::default(),
                &progress,
                &cancel,
                |diff: Diff, id| {
                    if diff == Diff::ExtraOnAtlas && policy == ExtrasPolicy::Report {
                        kept += 1;
                        return;
                    }
                    pending.push(repair_mark(&ns, id));
                    if pending.len() >= REPAIR_CHUNK {
                        let n = pending.len() as u64;
                        match queue.enqueue(std::mem::take(&mut pending)) {
                            Ok(_) => queued += n,
                            Err(e) => {
                                failed.get_or_insert(e.to_string());
                                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                },
            )
            .await
            .map_err(|e| format!("scanning {ns} failed: {e}"))?;
            if let Some(e) = failed {
                return Err(format!("journaling repairs of {ns} failed: {e}"));
            }
            scope.count_extras(&ns.coll, report.extra_on_atlas);
            if kept > 0 {
                tracing::warn!(
                    "{ns}: {kept} document(s) in scope exist on Atlas but not locally; extras policy \"report\" leaves them in place (set SYNC_EXTRAS_POLICY for this collection to \"delete\" to remove them)"
                );
            }
            let n = pending.len() as u64;
            queue
                .enqueue(pending)
                .map_err(|e| format!("journaling repairs of {ns} failed: {e}"))?;
            tracing::debug!(
                "{ns}: {} scanned, {} different",
                report.local_count,
                report.different
            );
            Ok(queued + n)
        })
    })
}
