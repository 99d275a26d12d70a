//! JS ⇄ core type conversion for the binding.

use dualsync_core::deadletter::DeadLetterFilter;
use dualsync_core::queue::NewMark;
use dualsync_core::scope::{self, ExtrasPolicy, ScopeRule, ScopeRules};
use dualsync_core::wire::{mark_from_wire, WireValue};
use dualsync_core::EngineConfig;
use napi::bindgen_prelude::{Buffer, Either3};
use napi_derive::napi;
use std::time::Duration;

/// Engine options, already validated and defaulted by lib/config.js.
#[napi(object)]
pub struct NativeConfig {
    pub local_uri: String,
    pub atlas_uri: String,
    pub local_db: String,
    pub atlas_db: String,
    pub data_dir: String,
    pub persist_queue: bool,
    pub fsync_interval_ms: u32,
    pub queue_max_size: u32,
    pub batch_size: u32,
    pub worker_interval_ms: u32,
    pub concurrency: u32,
    pub max_retries: u32,
    pub excluded_collections: Vec<String>,
    pub backoff_min_ms: u32,
    pub backoff_max_ms: u32,
    pub connect_timeout_ms: u32,
    pub log_level: String,
    pub segment_bytes: Option<u32>,
    /// Scope and extras policy per collection; `*` applies to the rest.
    pub scope_rules: Option<Vec<NativeScopeRule>>,
    /// Re-read acknowledged documents (several processes share local).
    pub verify_after_ack: Option<bool>,
    /// Most reads of local the drain runs at once.
    pub local_read_limit: Option<u32>,
    /// Lower that limit while the local server is busy.
    pub local_read_adaptive: Option<bool>,
    /// Share of the time the drain reads local while the app writes (0.01–1).
    pub drain_share: Option<f64>,
    /// Let the JS layer write marks into the capture ring (default true).
    pub capture_ring: Option<bool>,
}

/// One collection's rule, as lib/scope.js resolves it.
#[napi(object)]
pub struct NativeScopeRule {
    /// A collection name, or `*`.
    pub collection: String,
    /// The scope filter as a BSON document; absent = every document.
    pub filter: Option<Buffer>,
    /// "report" or "delete".
    pub extras_policy: String,
}

/// One mark as the JS layer encodes it: `k` says how to read `v`.
/// 0 ObjectId (24-hex string), 1 string, 2 int32, 3 double, 4 int64
/// (decimal string), 5 BSON document `{_id: …}` (Buffer), 6 Date (ms),
/// 9 whole collection.
#[napi(object)]
pub struct NativeMark {
    pub c: String,
    pub d: String,
    pub k: u32,
    pub v: Option<Either3<String, f64, Buffer>>,
    /// An intent: taken before the app's write (`MarkKind::Intent`,
    /// `MarkKind::CollectionIntent`).
    pub i: Option<bool>,
}

#[napi(object)]
pub struct NativeJobOptions {
    pub collections: Option<Vec<String>>,
    pub dry_run: Option<bool>,
    /// Fail once the servers did not answer for this long (default: wait).
    pub wait_ms: Option<f64>,
}

#[napi(object)]
pub struct NativeRetryFilter {
    pub collection: Option<String>,
    pub code: Option<i32>,
}

pub fn dead_letter_filter(f: Option<NativeRetryFilter>) -> DeadLetterFilter {
    match f {
        Some(f) => DeadLetterFilter {
            collection: f.collection,
            code: f.code,
        },
        None => DeadLetterFilter::default(),
    }
}

pub fn config_from_js(c: NativeConfig) -> Result<EngineConfig, String> {
    let mut cfg = EngineConfig::new(&c.local_uri, &c.atlas_uri, c.data_dir.into());
    cfg.local_db = c.local_db;
    cfg.atlas_db = c.atlas_db;
    cfg.persist_queue = c.persist_queue;
    cfg.fsync_interval = Duration::from_millis(c.fsync_interval_ms.into());
    cfg.queue_max_size = c.queue_max_size.max(1) as usize;
    cfg.batch_size = c.batch_size.max(1) as usize;
    cfg.worker_interval = Duration::from_millis(c.worker_interval_ms.into());
    cfg.concurrency = c.concurrency.clamp(1, 64) as usize;
    cfg.max_retries = c.max_retries;
    cfg.excluded_collections = c.excluded_collections;
    cfg.backoff_min = Duration::from_millis(c.backoff_min_ms.max(1).into());
    cfg.backoff_max = Duration::from_millis(c.backoff_max_ms.max(c.backoff_min_ms).into());
    cfg.connect_timeout = Duration::from_millis(c.connect_timeout_ms.max(100).into());
    cfg.log_level = dualsync_core::logging::parse_level(&c.log_level).ok_or_else(|| {
        format!(
            "logLevel {:?} is not one of debug, info, warn, error",
            c.log_level
        )
    })?;
    cfg.verify_after_ack = c.verify_after_ack.unwrap_or(false);
    if let Some(n) = c.local_read_limit {
        cfg.local_read_limit = (n as usize).max(1);
    }
    cfg.local_read_adaptive = c.local_read_adaptive.unwrap_or(true);
    if let Some(s) = c.drain_share {
        if !(0.01..=1.0).contains(&s) {
            return Err(format!("drainShare must be from 0.01 to 1, got {s}"));
        }
        cfg.drain_share = s;
    }
    cfg.capture_ring = c.capture_ring.unwrap_or(true);
    if let Some(s) = c.segment_bytes {
        cfg.segment_bytes = u64::from(s).max(4096);
    }
    if let Some(rules) = c.scope_rules {
        cfg.scope = std::sync::Arc::new(scope_rules_from_js(rules)?);
    }
    Ok(cfg)
}

fn scope_rules_from_js(rules: Vec<NativeScopeRule>) -> Result<ScopeRules, String> {
    let mut default = None;
    let mut per = std::collections::HashMap::new();
    for r in rules {
        let extras_policy = ExtrasPolicy::parse(&r.extras_policy).ok_or_else(|| {
            format!(
                "extras policy {:?} of {:?} is not one of report, delete",
                r.extras_policy, r.collection
            )
        })?;
        let filter =
            match r.filter {
                Some(b) => Some(bson::RawDocumentBuf::from_bytes(b.to_vec()).map_err(|e| {
                    format!("scope of {:?} is not a BSON document: {e}", r.collection)
                })?),
                None => None,
            };
        let rule = ScopeRule {
            filter,
            extras_policy,
        };
        if r.collection == scope::DEFAULT_KEY {
            default = Some(rule);
        } else {
            per.insert(r.collection, rule);
        }
    }
    let default = default.unwrap_or_else(|| ScopeRules::default().rule("").clone());
    ScopeRules::new(default, per)
}

/// The op kinds of the wire form (`k` of an op), for `opKinds()`.
pub use dualsync_core::wire::kind;

fn value_from_js(v: &Option<Either3<String, f64, Buffer>>) -> WireValue<'_> {
    match v {
        None => WireValue::None,
        Some(Either3::A(s)) => WireValue::Str(s),
        Some(Either3::B(n)) => WireValue::Num(*n),
        Some(Either3::C(b)) => WireValue::Bytes(b),
    }
}

/// Converts and validates marks; the error names the offending index.
pub fn marks_from_js(marks: Vec<NativeMark>) -> Result<Vec<NewMark>, String> {
    let mut out = Vec::with_capacity(marks.len());
    for (i, m) in marks.into_iter().enumerate() {
        let NativeMark {
            c,
            d,
            k,
            v,
            i: intent,
        } = m;
        let desc = m_desc(&c);
        let mark = mark_from_wire(c, d, k, value_from_js(&v), intent == Some(true))
            .map_err(|e| format!("op {i} ({desc}): {e}"))?;
        out.push(mark);
    }
    Ok(out)
}

fn m_desc(c: &str) -> String {
    if c.is_empty() {
        "no collection".into()
    } else {
        format!("collection {c:?}")
    }
}
