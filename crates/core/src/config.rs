//! Engine configuration. Parsing and validation of env vars happens in JS
//! (lib/config.js) so errors can name the variable; here we only check what
//! the core itself depends on.

use crate::scope::ScopeRules;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything the engine needs to run. Built by the binding from JS options.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub local_uri: String,
    pub atlas_uri: String,
    /// Database the marks default to (the local URI's path, or "test").
    pub local_db: String,
    /// Atlas database that receives `local_db`; other databases map to themselves.
    pub atlas_db: String,
    pub data_dir: PathBuf,
    pub persist_queue: bool,
    pub fsync_interval: Duration,
    /// Marks kept in memory; beyond this they live only in the journal.
    pub queue_max_size: usize,
    pub batch_size: usize,
    /// Longest a mark waits for its batch to fill (0 = send at once).
    pub worker_interval: Duration,
    /// Batches in flight at once; each document always goes to the same lane,
    /// so per-document order holds.
    pub concurrency: usize,
    pub max_retries: u32,
    pub excluded_collections: Vec<String>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub segment_bytes: u64,
    /// Server selection / connect timeout for both clients.
    pub connect_timeout: Duration,
    pub log_level: tracing::Level,
    /// Longest a pre-write mark (intent) waits for its post-write mark.
    pub intent_delay: Duration,
    /// Which documents of each collection this installation owns, and what
    /// reconciles do with owned documents only Atlas has (shared so the
    /// extras counters are one set per engine).
    pub scope: Arc<ScopeRules>,
    /// Re-read acknowledged documents and resend what local changed since
    /// (other processes write the same local database).
    pub verify_after_ack: bool,
    /// Most reads of local the drain runs at once (SYNC_LOCAL_READ_LIMIT).
    pub local_read_limit: usize,
    /// Lower that limit while local reads cost more than when idle.
    pub local_read_adaptive: bool,
    /// Share of the time the drain reads local while the app writes
    /// (SYNC_DRAIN_SHARE; 1 never holds it back).
    /// Let the JS layer write marks into the capture ring (crate::ring)
    /// instead of calling in; off, or with an fsync per append, every mark is a call.
    pub capture_ring: bool,
    pub drain_share: f64,
}

impl EngineConfig {
    /// Defaults that match the documented env defaults.
    pub fn new(local_uri: &str, atlas_uri: &str, data_dir: PathBuf) -> Self {
        Self {
            local_uri: local_uri.to_owned(),
            atlas_uri: atlas_uri.to_owned(),
            local_db: "test".into(),
            atlas_db: "test".into(),
            data_dir,
            persist_queue: true,
            fsync_interval: Duration::from_millis(1000),
            queue_max_size: 10_000,
            batch_size: 100,
            worker_interval: Duration::from_millis(100),
            concurrency: 4,
            max_retries: 5,
            excluded_collections: Vec::new(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            segment_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(10),
            log_level: tracing::Level::INFO,
            intent_delay: Duration::from_secs(30),
            scope: Arc::new(ScopeRules::default()),
            verify_after_ack: false,
            local_read_limit: 32,
            local_read_adaptive: true,
            drain_share: 0.03,
            capture_ring: true,
        }
    }

    /// Atlas database name for a local database name.
    pub fn atlas_db_for(&self, local_db: &str) -> String {
        if local_db == self.local_db {
            self.atlas_db.clone()
        } else {
            local_db.to_owned()
        }
    }

    pub fn is_excluded(&self, coll: &str) -> bool {
        self.excluded_collections.iter().any(|c| c == coll)
    }
}
