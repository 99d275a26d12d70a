//! Counters (atomics) and latency histograms, read as a JSON snapshot.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Per-collection counters.
#[derive(Default)]
pub struct CollectionCounters {
    pub enqueued: AtomicU64,
    pub upserts: AtomicU64,
    pub deletes: AtomicU64,
    pub failures: AtomicU64,
}

/// Latency distribution in milliseconds (1 ms .. 1 day, 2 significant digits).
pub struct LatencyHistogram(Mutex<Histogram<u64>>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        let h = Histogram::new_with_bounds(1, 86_400_000, 2)
            .unwrap_or_else(|_| Histogram::new(2).expect("2 significant digits is valid"));
        Self(Mutex::new(h))
    }
}

impl LatencyHistogram {
    pub fn record(&self, ms: u64) {
        if let Ok(mut h) = self.0.lock() {
            h.saturating_record(ms.max(1));
        }
    }

    pub fn snapshot(&self) -> Value {
        let Ok(h) = self.0.lock() else {
            return Value::Null;
        };
        json!({
            "count": h.len(),
            "p50": h.value_at_quantile(0.50),
            "p95": h.value_at_quantile(0.95),
            "p99": h.value_at_quantile(0.99),
            "max": h.max(),
            "sum": (h.mean() * h.len() as f64).round(),
        })
    }
}

/// Throughput over a sliding window: `(instant, applied total)` samples.
#[derive(Default)]
struct RateWindow(Vec<(Instant, u64)>);

/// Batch outcomes of the last `SUCCESS_WINDOW_MS`, in buckets, so the success
/// rate (and the health check built on it) recovers once an outage is over
/// instead of being diluted by, or stuck on, the whole uptime.
#[derive(Default)]
pub struct OutcomeWindow(std::collections::VecDeque<(u64, u64, u64)>);

pub const SUCCESS_WINDOW_MS: u64 = 5 * 60 * 1000;
const OUTCOME_BUCKET_MS: u64 = 10_000;

impl OutcomeWindow {
    fn prune(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(SUCCESS_WINDOW_MS) / OUTCOME_BUCKET_MS;
        while self.0.front().is_some_and(|b| b.0 <= oldest) {
            self.0.pop_front();
        }
    }

    pub fn record(&mut self, ok: bool, now_ms: u64) {
        self.prune(now_ms);
        let bucket = now_ms / OUTCOME_BUCKET_MS;
        if self.0.back().is_none_or(|b| b.0 != bucket) {
            self.0.push_back((bucket, 0, 0));
        }
        if let Some(b) = self.0.back_mut() {
            if ok {
                b.1 += 1;
            } else {
                b.2 += 1;
            }
        }
    }

    /// Succeeded / all batch attempts in the window; 1 when there were none.
    pub fn success_rate(&mut self, now_ms: u64) -> f64 {
        self.prune(now_ms);
        let (ok, failed) = self
            .0
            .iter()
            .fold((0u64, 0u64), |(o, f), b| (o + b.1, f + b.2));
        if ok + failed == 0 {
            1.0
        } else {
            ok as f64 / (ok + failed) as f64
        }
    }
}

/// All engine metrics. Cheap to update from any thread.
pub struct Metrics {
    pub started: Instant,
    pub enqueued: AtomicU64,
    pub coalesced: AtomicU64,
    pub upserts: AtomicU64,
    pub deletes: AtomicU64,
    pub batches: AtomicU64,
    pub batches_failed: AtomicU64,
    pub retries: AtomicU64,
    pub transient_failures: AtomicU64,
    pub permanent_failures: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Acknowledged documents sent again because local changed meanwhile.
    pub verify_resends: AtomicU64,
    pub invalid_ops: AtomicU64,
    pub corrupt_records: AtomicU64,
    /// Capture ring records that could not be read (crate::ring); part of
    /// `corruptRecords`, which starts a full sync at the next start.
    pub ring_skipped: AtomicU64,
    pub recovered: AtomicU64,
    pub atlas_connected: AtomicBool,
    /// Unix ms of the last change of `atlas_connected`.
    pub atlas_since_ms: AtomicU64,
    pub last_success_ms: AtomicU64,
    pub apply_latency: LatencyHistogram,
    pub lag: LatencyHistogram,
    pub last_error: Mutex<Option<String>>,
    /// Collection scans started, and collection marks folded into a waiting scan.
    pub scans_started: AtomicU64,
    pub scans_coalesced: AtomicU64,
    /// Last failure to read local (does not make Atlas look unreachable).
    pub local_error: Mutex<Option<String>>,
    /// Reads of local the drain may run at once now (see `read_limit`).
    pub local_read_limit: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Share of the time the drain reads local now, in thousandths (1000
    /// unless a busy server holds it to one read at a time and less).
    pub drain_share: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// db → collection → counters (nested so a lookup allocates nothing).
    collections: Mutex<HashMap<String, HashMap<String, std::sync::Arc<CollectionCounters>>>>,
    rate: Mutex<RateWindow>,
    outcomes: Mutex<OutcomeWindow>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            enqueued: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            upserts: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batches_failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            transient_failures: AtomicU64::new(0),
            permanent_failures: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            verify_resends: AtomicU64::new(0),
            invalid_ops: AtomicU64::new(0),
            corrupt_records: AtomicU64::new(0),
            ring_skipped: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            atlas_connected: AtomicBool::new(false),
            atlas_since_ms: AtomicU64::new(now_ms()),
            last_success_ms: AtomicU64::new(0),
            apply_latency: LatencyHistogram::default(),
            lag: LatencyHistogram::default(),
            last_error: Mutex::new(None),
            scans_started: AtomicU64::new(0),
            scans_coalesced: AtomicU64::new(0),
            local_error: Mutex::new(None),
            local_read_limit: Default::default(),
            drain_share: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1000)),
            collections: Mutex::new(HashMap::new()),
            rate: Mutex::new(RateWindow::default()),
            outcomes: Mutex::new(OutcomeWindow::default()),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn iso(ms: u64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    bson::DateTime::from_millis(ms as i64)
        .try_to_rfc3339_string()
        .map(Value::String)
        .unwrap_or(Value::Null)
}

impl Metrics {
    /// Counts one batch attempt: lifetime counters and the success window.
    pub fn record_batch(&self, ok: bool) {
        if ok {
            self.batches.fetch_add(1, Relaxed);
        } else {
            self.batches_failed.fetch_add(1, Relaxed);
        }
        if let Ok(mut w) = self.outcomes.lock() {
            w.record(ok, now_ms());
        }
    }

    /// Counters of one collection, created on first use. On the enqueue
    /// hot path: a hit allocates nothing.
    pub fn collection(&self, db: &str, coll: &str) -> std::sync::Arc<CollectionCounters> {
        let mut map = crate::poison::lock(&self.collections);
        if let Some(c) = map.get(db).and_then(|colls| colls.get(coll)) {
            return c.clone();
        }
        map.entry(db.to_owned())
            .or_default()
            .entry(coll.to_owned())
            .or_default()
            .clone()
    }

    /// Every (db, collection) that has had a mark since start.
    pub fn namespaces(&self) -> Vec<(String, String)> {
        let map = crate::poison::lock(&self.collections);
        map.iter()
            .flat_map(|(db, colls)| colls.keys().map(move |c| (db.clone(), c.clone())))
            .collect()
    }

    /// Records Atlas reachability; returns the previous state's duration in
    /// ms when this call changed it.
    pub fn set_atlas_connected(&self, connected: bool) -> Option<u64> {
        if self.atlas_connected.swap(connected, Relaxed) != connected {
            let now = now_ms();
            let since = self.atlas_since_ms.swap(now, Relaxed);
            return Some(now.saturating_sub(since));
        }
        None
    }

    /// Records the last failure to read local; true when local was fine before.
    pub fn set_local_error(&self, msg: Option<String>) -> bool {
        match self.local_error.lock() {
            Ok(mut e) => {
                let was_ok = e.is_none();
                *e = msg;
                was_ok && e.is_some()
            }
            Err(_) => false,
        }
    }

    pub fn set_last_error(&self, msg: Option<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = msg;
        }
    }

    /// Applied documents per second over the last ~10 s.
    fn applied_rate(&self) -> f64 {
        let total = self.upserts.load(Relaxed) + self.deletes.load(Relaxed);
        let now = Instant::now();
        let Ok(mut w) = self.rate.lock() else {
            return 0.0;
        };
        w.0.push((now, total));
        w.0.retain(|(t, _)| now.duration_since(*t).as_secs_f64() <= 10.0);
        match w.0.first() {
            Some((t0, n0)) if now.duration_since(*t0).as_secs_f64() > 0.5 => {
                (total - n0) as f64 / now.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// A JSON snapshot; the engine adds backlog, journal and job fields.
    pub fn snapshot(&self) -> Map<String, Value> {
        let upserts = self.upserts.load(Relaxed);
        let deletes = self.deletes.load(Relaxed);
        let batches = self.batches.load(Relaxed);
        let failed = self.batches_failed.load(Relaxed);
        let success_rate = match self.outcomes.lock() {
            Ok(mut w) => w.success_rate(now_ms()),
            Err(_) => 1.0,
        };
        let collections: Map<String, Value> = match self.collections.lock() {
            Ok(m) => m
                .iter()
                .flat_map(|(db, colls)| colls.iter().map(move |(coll, c)| (db, coll, c)))
                .map(|(db, coll, c)| {
                    (
                        format!("{db}.{coll}"),
                        json!({
                            "enqueued": c.enqueued.load(Relaxed),
                            "upserts": c.upserts.load(Relaxed),
                            "deletes": c.deletes.load(Relaxed),
                            "failures": c.failures.load(Relaxed),
                        }),
                    )
                })
                .collect(),
            Err(_) => Map::new(),
        };
        let last_error = self.last_error.lock().ok().and_then(|e| e.clone());
        let mut m = Map::new();
        m.insert("enqueued".into(), self.enqueued.load(Relaxed).into());
        m.insert("coalesced".into(), self.coalesced.load(Relaxed).into());
        m.insert(
            "applied".into(),
            json!({ "upserts": upserts, "deletes": deletes, "total": upserts + deletes }),
        );
        m.insert("batches".into(), batches.into());
        m.insert("retries".into(), self.retries.load(Relaxed).into());
        m.insert(
            "failures".into(),
            json!({
                "transient": self.transient_failures.load(Relaxed),
                "permanent": self.permanent_failures.load(Relaxed),
                "batches": failed,
            }),
        );
        m.insert(
            "deadLettered".into(),
            self.dead_lettered.load(Relaxed).into(),
        );
        m.insert("invalidOps".into(), self.invalid_ops.load(Relaxed).into());
        m.insert(
            "verifyResends".into(),
            self.verify_resends.load(Relaxed).into(),
        );
        m.insert("successRate".into(), success_rate.into());
        m.insert(
            "localReadLimit".into(),
            self.local_read_limit.load(Relaxed).into(),
        );
        m.insert(
            "drainShare".into(),
            (self.drain_share.load(Relaxed) as f64 / 1000.0).into(),
        );
        m.insert(
            "throughput".into(),
            json!({ "appliedPerSec": self.applied_rate() }),
        );
        m.insert("applyLatencyMs".into(), self.apply_latency.snapshot());
        m.insert("lagMs".into(), self.lag.snapshot());
        m.insert(
            "atlas".into(),
            json!({
                "connected": self.atlas_connected.load(Relaxed),
                "since": iso(self.atlas_since_ms.load(Relaxed)),
                "lastSuccessAt": iso(self.last_success_ms.load(Relaxed)),
                "lastError": last_error,
            }),
        );
        let local_error = self.local_error.lock().ok().and_then(|e| e.clone());
        m.insert("local".into(), json!({ "lastError": local_error }));
        m.insert("collections".into(), Value::Object(collections));
        m.insert(
            "uptimeMs".into(),
            (self.started.elapsed().as_millis() as u64).into(),
        );
        m
    }
}

/// What the engine knows beyond the counters, for [`Metrics::engine_snapshot`].
pub struct EngineView<'a> {
    pub state: &'static str,
    pub memory: u64,
    pub disk: u64,
    pub in_flight: u64,
    pub oldest_pending_ms: Option<u64>,
    pub dead_letters: u64,
    /// Scope and extras policy per collection (`ScopeRules::snapshot`).
    pub scope: Value,
    /// Marks that could not be journaled (`LostMarks::snapshot`).
    pub lost_marks: Value,
    pub scans_running: usize,
    pub scans_waiting: usize,
    pub full_sync: Value,
    pub journal: JournalView,
    /// The URIs whose credentials are scrubbed from error messages.
    pub secrets: [&'a str; 2],
}

/// The journal's part of the snapshot.
pub struct JournalView {
    pub persist: bool,
    pub bytes: u64,
    pub segments: u64,
    pub corrupt_records: u64,
    pub recovered: u64,
    pub checkpoint: u64,
    pub end: u64,
}

impl Metrics {
    /// The full metrics JSON `sync.metrics()` returns: the counters plus the
    /// engine's backlog, journal, scans and job state.
    pub fn engine_snapshot(&self, v: &EngineView<'_>) -> Value {
        let mut m = self.snapshot();
        // Driver errors can quote a connection string: scrub at the source.
        for side in ["atlas", "local"] {
            if let Some(Value::String(e)) = m.get_mut(side).and_then(|s| s.get_mut("lastError")) {
                *e = crate::redact::scrub(e, &v.secrets);
            }
        }
        m.insert("enabled".into(), true.into());
        m.insert("state".into(), v.state.into());
        m.insert(
            "backlog".into(),
            json!({
                "total": v.memory + v.disk + v.in_flight,
                "memory": v.memory,
                "disk": v.disk,
                "inFlight": v.in_flight,
            }),
        );
        m.insert(
            "oldestPendingAgeMs".into(),
            v.oldest_pending_ms
                .map(|t| now_ms().saturating_sub(t))
                .into(),
        );
        m.insert("deadLetters".into(), v.dead_letters.into());
        m.insert("scope".into(), v.scope.clone());
        m.insert("lostMarks".into(), v.lost_marks.clone());
        m.insert(
            "collectionScans".into(),
            json!({
                "started": self.scans_started.load(Relaxed),
                "coalesced": self.scans_coalesced.load(Relaxed),
                "running": v.scans_running,
                "waiting": v.scans_waiting,
            }),
        );
        m.insert("fullSync".into(), v.full_sync.clone());
        let j = &v.journal;
        m.insert(
            "journal".into(),
            json!({
                "persist": j.persist,
                "bytes": j.bytes,
                "segments": j.segments,
                "corruptRecords": j.corrupt_records.max(self.corrupt_records.load(Relaxed)) + self.ring_skipped.load(Relaxed),
                "recovered": j.recovered,
                "checkpoint": j.checkpoint,
                "end": j.end,
            }),
        );
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rate_covers_the_last_five_minutes_only() {
        let mut w = OutcomeWindow::default();
        let t0 = 1_700_000_000_000;
        assert_eq!(w.success_rate(t0), 1.0);
        for i in 0..90 {
            w.record(true, t0 + i * 1000);
        }
        for i in 0..10 {
            w.record(false, t0 + 90_000 + i * 1000);
        }
        assert!((w.success_rate(t0 + 100_000) - 0.9).abs() < 1e-9);
        // The outage's failures age out; the rate recovers without new successes diluting it.
        assert_eq!(
            w.success_rate(t0 + 100_000 + SUCCESS_WINDOW_MS + 10_000),
            1.0
        );
        // Only the recent failures count, whatever came long before.
        let later = t0 + 3 * SUCCESS_WINDOW_MS;
        w.record(false, later);
        w.record(true, later + 1);
        assert!((w.success_rate(later + 2) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn histogram_percentiles_follow_records() {
        let h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(ms);
        }
        let s = h.snapshot();
        assert_eq!(s["count"], 100);
        let p50 = s["p50"].as_u64().unwrap();
        let p99 = s["p99"].as_u64().unwrap();
        assert!((49..=51).contains(&p50), "{s}");
        assert!((98..=100).contains(&p99), "{s}");
    }

    #[test]
    fn atlas_state_change_moves_since() {
        let m = Metrics::default();
        m.atlas_since_ms.store(1, Relaxed);
        m.set_atlas_connected(false); // no change
        assert_eq!(m.atlas_since_ms.load(Relaxed), 1);
        m.set_atlas_connected(true);
        assert!(m.atlas_since_ms.load(Relaxed) > 1);
    }
}
