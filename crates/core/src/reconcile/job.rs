//! Background verify / full-sync jobs: scan every synced collection in turn,
//! publish progress while running, and in a full sync hand each difference to
//! `repair` (which enqueues a mark; the drain worker does the writing).

use super::mergejoin::{CollectionReport, Diff, ScanProgress};
use super::verify::{
    estimated_count, list_sync_collections, scan_collection, ScanOptions, OWN_PREFIX,
};
use crate::scope::{filter_json, ExtrasPolicy, ScopeRules};
use bson::RawDocumentBuf;
use mongodb::Database;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// Called once per difference in a full sync: (collection, `{_id: v}`).
pub type RepairFn = Arc<dyn Fn(&str, &RawDocumentBuf) + Send + Sync>;

/// Produces the (local, Atlas) databases once both servers answer, or says
/// why not yet. Called again (with back-off) until it succeeds.
pub type ConnectFn = Box<
    dyn FnMut() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(Database, Database), String>> + Send>,
        > + Send,
>;

/// What a job covers and whether it repairs.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// Only these collections (each must be a synced one); `None` = all.
    pub collections: Option<Vec<String>>,
    /// Verify only: report, repair nothing.
    pub dry_run: bool,
    pub batch_size: u32,
    pub sample_limit: usize,
}

/// Live state of a job. Counters are atomics so a snapshot never waits on the
/// scan; the strings and finished reports sit behind a short-held mutex.
#[derive(Debug, Default)]
pub struct JobProgress {
    scan: ScanProgress,
    collections_total: AtomicUsize,
    collections_done: AtomicUsize,
    docs_estimated: AtomicU64,
    repairs_queued: AtomicU64,
    text: Mutex<JobText>,
}

#[derive(Debug, Default)]
struct JobText {
    state: &'static str,
    waiting_for: Option<String>,
    current_collection: Option<String>,
    error: Option<String>,
    finished_at: Option<String>,
    finished: Option<Instant>,
    reports: Vec<CollectionReport>,
}

impl JobProgress {
    fn text(&self) -> MutexGuard<'_, JobText> {
        crate::poison::lock(&self.text)
    }
}

/// A point-in-time view of a job, ready to serialise as JSON.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSnapshot {
    pub id: String,
    /// "verify" | "fullSync"
    pub kind: String,
    /// waiting (for the servers) | running | done | cancelled | failed
    pub state: String,
    /// While waiting: why (e.g. Atlas unreachable), redacted.
    pub waiting_for: Option<String>,
    /// RFC 3339
    pub started_at: String,
    pub finished_at: Option<String>,
    pub collections_total: usize,
    pub collections_done: usize,
    pub current_collection: Option<String>,
    pub docs_scanned: u64,
    pub docs_estimated: u64,
    pub rate_per_sec: f64,
    pub eta_ms: Option<u64>,
    pub differences: u64,
    pub repairs_queued: u64,
    pub error: Option<String>,
    pub reports: Vec<CollectionReport>,
}

/// A running or finished job, shared between its task and its observers.
#[derive(Debug)]
pub struct Job {
    id: String,
    kind: &'static str,
    started_at: String,
    started: Instant,
    progress: JobProgress,
    cancel: AtomicBool,
    done: watch::Sender<bool>,
}

/// How the job's task ended.
enum Outcome {
    Done,
    Cancelled,
    Failed(String),
}

impl Job {
    fn new(kind: &'static str) -> Job {
        let progress = JobProgress::default();
        progress.text().state = "running";
        Job {
            id: format!("{:016x}", rand::random::<u64>()),
            kind,
            started_at: now_rfc3339(),
            started: Instant::now(),
            progress,
            cancel: AtomicBool::new(false),
            done: watch::channel(false).0,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Asks the job to stop; it finishes as "cancelled" at its next document.
    pub fn cancel(&self) {
        self.cancel.store(true, Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until the job has finished and returns its final snapshot.
    pub async fn wait(&self) -> JobSnapshot {
        let mut rx = self.done.subscribe();
        // The sender lives in `self`, so this only returns once finished.
        let _ = rx.wait_for(|done| *done).await;
        self.snapshot()
    }

    pub fn snapshot(&self) -> JobSnapshot {
        let p = &self.progress;
        let text = p.text();
        let scanned = p.scan.scanned.load(Relaxed);
        let estimated = p.docs_estimated.load(Relaxed);
        let end = text.finished.unwrap_or_else(Instant::now);
        let secs = end.duration_since(self.started).as_secs_f64();
        let rate = if secs > 0.0 {
            scanned as f64 / secs
        } else {
            0.0
        };
        let eta_ms = (text.state == "running" && rate > 0.0)
            .then(|| (estimated.saturating_sub(scanned) as f64 / rate * 1000.0) as u64);
        JobSnapshot {
            id: self.id.clone(),
            kind: self.kind.to_owned(),
            state: text.state.to_owned(),
            waiting_for: text.waiting_for.clone(),
            started_at: self.started_at.clone(),
            finished_at: text.finished_at.clone(),
            collections_total: p.collections_total.load(Relaxed),
            collections_done: p.collections_done.load(Relaxed),
            current_collection: text.current_collection.clone(),
            docs_scanned: scanned,
            docs_estimated: estimated,
            rate_per_sec: rate,
            eta_ms,
            differences: p.scan.differences.load(Relaxed),
            repairs_queued: p.repairs_queued.load(Relaxed),
            error: text.error.clone(),
            reports: text.reports.clone(),
        }
    }

    fn finish(&self, outcome: Outcome) {
        {
            let mut text = self.progress.text();
            let (state, error) = match outcome {
                Outcome::Done => ("done", None),
                Outcome::Cancelled => ("cancelled", None),
                Outcome::Failed(e) => ("failed", Some(crate::redact::scrub(&e, &[]))),
            };
            text.state = state;
            text.waiting_for = None;
            text.error = error;
            text.current_collection = None;
            text.finished = Some(Instant::now());
            text.finished_at = Some(now_rfc3339());
        }
        self.done.send_replace(true);
    }
}

fn now_rfc3339() -> String {
    bson::DateTime::now()
        .try_to_rfc3339_string()
        .unwrap_or_default()
}

/// Finishes the job however its task ends: normally, by panic (unwinding drops
/// the task), or because the runtime shut down with the task pending.
struct Finisher {
    job: Arc<Job>,
    outcome: Option<Outcome>,
}

impl Finisher {
    fn complete(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Outcome::Failed("the job stopped unexpectedly (panic or runtime shutdown)".into())
        });
        self.job.finish(outcome);
    }
}

/// Starts a verify (`dry_run`) or full-sync job on `rt` and returns at once.
pub fn spawn_job(
    rt: &tokio::runtime::Handle,
    local_db: Database,
    atlas_db: Database,
    excluded: Vec<String>,
    scope: Arc<ScopeRules>,
    opts: JobOptions,
    repair: RepairFn,
) -> Arc<Job> {
    let connect: ConnectFn = Box::new(move || {
        let dbs = (local_db.clone(), atlas_db.clone());
        Box::pin(async move { Ok(dbs) })
    });
    spawn_job_when(rt, connect, None, excluded, scope, opts, repair)
}

/// Like [`spawn_job`], for servers that may not be reachable yet: the job is
/// accepted at once and stays `waiting` (saying why) until `connect`
/// succeeds, then runs. Cancelling a waiting job ends it as cancelled.
/// `wait_limit`: fail (with the reason) once waiting took this long (`ZERO`:
/// one attempt); `None`: wait as long as it takes.
pub fn spawn_job_when(
    rt: &tokio::runtime::Handle,
    mut connect: ConnectFn,
    wait_limit: Option<std::time::Duration>,
    excluded: Vec<String>,
    scope: Arc<ScopeRules>,
    opts: JobOptions,
    repair: RepairFn,
) -> Arc<Job> {
    let job = Arc::new(Job::new(if opts.dry_run { "verify" } else { "fullSync" }));
    let mut finisher = Finisher {
        job: job.clone(),
        outcome: None,
    };
    rt.spawn(async move {
        let mut delay = std::time::Duration::from_millis(200);
        let began = Instant::now();
        let (local_db, atlas_db) = loop {
            if finisher.job.cancel.load(Relaxed) {
                finisher.complete(Outcome::Cancelled);
                return;
            }
            match connect().await {
                Ok(dbs) => break dbs,
                Err(why) => {
                    let why = crate::redact::scrub(&why, &[]);
                    if wait_limit.is_some_and(|limit| began.elapsed() >= limit) {
                        finisher.complete(Outcome::Failed(why));
                        return;
                    }
                    {
                        let mut text = finisher.job.progress.text();
                        if text.waiting_for.as_deref() != Some(why.as_str()) {
                            tracing::warn!(
                                "job {} waiting for the servers: {why}",
                                finisher.job.id
                            );
                        }
                        text.state = "waiting";
                        text.waiting_for = Some(why);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            }
        };
        {
            let mut text = finisher.job.progress.text();
            text.state = "running";
            text.waiting_for = None;
        }
        let outcome = run(
            &finisher.job,
            &local_db,
            &atlas_db,
            &excluded,
            &scope,
            &opts,
            &repair,
        )
        .await;
        finisher.complete(outcome);
    });
    job
}

async fn run(
    job: &Job,
    local_db: &Database,
    atlas_db: &Database,
    excluded: &[String],
    scope: &ScopeRules,
    opts: &JobOptions,
    repair: &RepairFn,
) -> Outcome {
    let p = &job.progress;
    let synced = match list_sync_collections(local_db, excluded, OWN_PREFIX).await {
        Ok(names) => names,
        Err(e) => return Outcome::Failed(format!("listing local collections failed: {e}")),
    };
    let names = match &opts.collections {
        None => synced,
        Some(wanted) => {
            let unknown: Vec<&String> = wanted.iter().filter(|w| !synced.contains(w)).collect();
            if !unknown.is_empty() {
                return Outcome::Failed(format!(
                    "not synced collections (absent locally, excluded, system or internal): {unknown:?}"
                ));
            }
            wanted.clone()
        }
    };
    p.collections_total.store(names.len(), Relaxed);
    for name in &names {
        let (l, a) = (local_db.collection(name), atlas_db.collection(name));
        let est = estimated_count::<RawDocumentBuf>(&l)
            .await
            .max(estimated_count::<RawDocumentBuf>(&a).await);
        p.docs_estimated.fetch_add(est, Relaxed);
    }
    let scan_opts = ScanOptions {
        batch_size: opts.batch_size,
        sample_limit: opts.sample_limit,
    };
    for name in &names {
        if job.cancel.load(Relaxed) {
            return Outcome::Cancelled;
        }
        p.text().current_collection = Some(name.clone());
        let (l, a) = (local_db.collection(name), atlas_db.collection(name));
        let policy = scope.extras_policy(name);
        let on_diff = |diff, id: &RawDocumentBuf| {
            // Under `report` an extra may be another writer's document: list it only.
            let keep = diff == Diff::ExtraOnAtlas && policy == ExtrasPolicy::Report;
            if !opts.dry_run && !keep {
                repair(name, id);
                p.repairs_queued.fetch_add(1, Relaxed);
            }
        };
        let filter = scope.filter(name);
        let scanned =
            scan_collection(&l, &a, filter, &scan_opts, &p.scan, &job.cancel, on_diff).await;
        let mut report = match scanned {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("collection {name:?}: {e}")),
        };
        settle_extras(&mut report, scope, policy, opts.dry_run);
        let cancelled = report.cancelled;
        p.text().reports.push(report);
        if cancelled {
            return Outcome::Cancelled;
        }
        p.collections_done.fetch_add(1, Relaxed);
    }
    Outcome::Done
}

/// Fills in the report's policy and extras counts; a full sync also adds
/// them to the engine's counters and, under `report`, says in the log what
/// it left in place and how to make the collection a pure mirror.
fn settle_extras(
    report: &mut CollectionReport,
    scope: &ScopeRules,
    policy: ExtrasPolicy,
    dry_run: bool,
) {
    report.extras_policy = policy.as_str().to_owned();
    let extras = report.extra_on_atlas;
    match policy {
        ExtrasPolicy::Report => report.extras_reported = extras,
        // A verify deletes nothing: its extras are differences a full sync repairs.
        ExtrasPolicy::Delete if !dry_run => report.extras_deleted = extras,
        ExtrasPolicy::Delete => {}
    }
    if dry_run || extras == 0 {
        return;
    }
    scope.count_extras(&report.collection, extras);
    let within = match scope.filter(&report.collection) {
        Some(f) => format!(" within scope {}", filter_json(f)),
        None => String::new(),
    };
    let samples = serde_json::to_string(&report.samples_extra).unwrap_or_default();
    match policy {
        ExtrasPolicy::Report => tracing::warn!(
            "full sync: {extras} document(s) of {:?}{within} exist on Atlas but not locally; extras policy \"report\" leaves them in place (a pure mirror would delete them), e.g. _id {samples}. To delete them, set SYNC_EXTRAS_POLICY={{\"{}\":\"delete\"}} (or extrasPolicy: {{ {}: 'delete' }}) and run a full sync",
            report.collection,
            report.collection,
            report.collection
        ),
        ExtrasPolicy::Delete => tracing::info!(
            "full sync: deleting {extras} document(s) of {:?}{within} from Atlas that local does not have (extras policy \"delete\"), e.g. _id {samples}",
            report.collection
        ),
    }
}
