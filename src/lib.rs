//! napi binding: converts JS values to core types and back. No logic here.

#![deny(clippy::all)]

mod convert;

use convert::{
    config_from_js, dead_letter_filter, marks_from_js, NativeConfig, NativeMark, NativeRetryFilter,
};
use dualsync_core::logging::LogSink;
use dualsync_core::{Engine, EngineError};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Log callback `(level, message) => void`: weak (never keeps Node alive),
/// called without blocking the engine's threads.
type LogFn = ThreadsafeFunction<(String, String), (), (String, String), Status, false, true>;

struct JsLogSink(LogFn);

impl LogSink for JsLogSink {
    fn log(&self, level: tracing::Level, message: &str) {
        let level = match level {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        let _ = self.0.call(
            (level.to_owned(), message.to_owned()),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

fn unknown_job(id: &str) -> Error {
    Error::new(Status::InvalidArg, format!("no job with id {id:?}"))
}

fn to_napi(e: EngineError) -> Error {
    match e {
        EngineError::Invalid(m) => Error::new(Status::InvalidArg, m),
        EngineError::Closed => Error::new(
            Status::Cancelled,
            "ERR_SYNC_CLOSED: the sync engine is closed",
        ),
        // A prefix the JS layer turns into `code`, like ERR_SYNC_CLOSED:
        // createSync waits and retries while a previous holder exits.
        EngineError::Journal(e @ dualsync_core::journal::JournalError::Locked { .. }) => {
            Error::new(Status::GenericFailure, format!("ERR_SYNC_LOCKED: {e}"))
        }
        other => Error::new(Status::GenericFailure, other.to_string()),
    }
}

/// The native engine. Closable: after `close()` every call fails with a
/// "closed" error instead of touching freed state.
#[napi]
pub struct NativeEngine {
    inner: RwLock<Option<Arc<Engine>>>,
}

#[napi]
impl NativeEngine {
    #[napi(constructor)]
    pub fn new(config: NativeConfig, log: Option<LogFn>) -> Result<Self> {
        let cfg = config_from_js(config).map_err(|m| Error::new(Status::InvalidArg, m))?;
        let sink: Arc<dyn LogSink> = match log {
            Some(f) => Arc::new(JsLogSink(f)),
            None => Arc::new(dualsync_core::logging::StderrSink),
        };
        let engine = Engine::open(cfg, sink).map_err(to_napi)?;
        Ok(Self {
            inner: RwLock::new(Some(engine)),
        })
    }

    fn engine(&self) -> Result<Arc<Engine>> {
        self.inner
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| to_napi(EngineError::Closed))
    }

    /// Journals marks (one or many) with a single write. Synchronous, never
    /// waits on the network. Returns how many were accepted.
    #[napi]
    pub fn enqueue(&self, marks: Vec<NativeMark>) -> Result<u32> {
        let engine = self.engine()?;
        let marks = marks_from_js(marks).map_err(|m| Error::new(Status::InvalidArg, m))?;
        let n = marks.len() as u32;
        engine.enqueue(marks).map_err(to_napi)?;
        Ok(n)
    }

    /// One mark as positional arguments (the fields of `NativeMark`): the
    /// same as `enqueue([mark])` without building and reading back an
    /// object and an array on the app's thread.
    #[napi]
    pub fn enqueue_one(
        &self,
        c: String,
        d: String,
        k: u32,
        v: Option<Either3<String, f64, Buffer>>,
        p: Option<bool>,
    ) -> Result<u32> {
        self.enqueue(vec![NativeMark { c, d, k, v, p }])
    }

    /// Metrics snapshot (plain JSON object).
    #[napi]
    pub fn metrics(&self) -> Result<serde_json::Value> {
        Ok(self.engine()?.metrics())
    }

    /// Resolves true once everything enqueued before the call is applied on
    /// Atlas or dead-lettered; false on timeout.
    #[napi]
    pub async fn flush(&self, timeout_ms: f64) -> Result<bool> {
        let engine = self.engine()?;
        let timeout = Duration::from_millis(timeout_ms.max(0.0) as u64);
        let handle = engine.handle().clone();
        handle
            .spawn(async move { engine.flush(timeout).await })
            .await
            .map_err(|e| Error::from_reason(e.to_string()))
    }

    /// Drains up to `drain_timeout_ms`, then stops. Resolves whether the
    /// backlog was fully drained (the rest stays in the journal).
    #[napi]
    pub async fn close(&self, drain_timeout_ms: f64) -> Result<bool> {
        let engine = match self.inner.write().ok().and_then(|mut g| g.take()) {
            Some(e) => e,
            None => return Ok(true),
        };
        let timeout = Duration::from_millis(drain_timeout_ms.max(0.0) as u64);
        // The close future drops the engine's own runtime, so it runs on a
        // plain thread rather than on that runtime.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let drained = match rt {
                Ok(rt) => rt.block_on(engine.close(timeout)),
                Err(_) => false,
            };
            // Outside the block_on: the engine's runtime may block to stop.
            engine.shutdown_runtime();
            drop(engine);
            let _ = tx.send(drained);
        });
        rx.await.map_err(|e| Error::from_reason(e.to_string()))
    }

    #[napi]
    pub fn pause(&self) -> Result<()> {
        self.engine()?.pause();
        Ok(())
    }

    #[napi]
    pub fn resume(&self) -> Result<()> {
        self.engine()?.resume();
        Ok(())
    }

    /// Starts a verify (`dryRun`) or full-sync job, or returns the running
    /// one's id. Blocks only if the MongoDB clients are not created yet.
    #[napi]
    pub fn start_job(&self, opts: convert::NativeJobOptions) -> Result<String> {
        let job = self
            .engine()?
            .start_job(opts.collections, opts.dry_run.unwrap_or(false))
            .map_err(to_napi)?;
        Ok(job.id().to_owned())
    }

    #[napi]
    pub fn job_snapshot(&self, id: String) -> Result<serde_json::Value> {
        let job = self.engine()?.job(&id).ok_or_else(|| unknown_job(&id))?;
        serde_json::to_value(job.snapshot()).map_err(|e| Error::from_reason(e.to_string()))
    }

    #[napi]
    pub fn cancel_job(&self, id: String) -> Result<()> {
        self.engine()?
            .job(&id)
            .ok_or_else(|| unknown_job(&id))?
            .cancel();
        Ok(())
    }

    /// Resolves with the final snapshot once the job ends.
    #[napi]
    pub async fn wait_job(&self, id: String) -> Result<serde_json::Value> {
        let job = self.engine()?.job(&id).ok_or_else(|| unknown_job(&id))?;
        let snap = job.wait().await;
        serde_json::to_value(snap).map_err(|e| Error::from_reason(e.to_string()))
    }

    #[napi]
    pub fn dead_letters(&self, filter: Option<NativeRetryFilter>) -> Result<serde_json::Value> {
        let list = self.engine()?.dead_letters(&dead_letter_filter(filter));
        serde_json::to_value(list).map_err(|e| Error::from_reason(e.to_string()))
    }

    /// Removes dead letters from this engine's store without re-queueing
    /// them here (adoption moves them to another engine first); returns them.
    #[napi]
    pub fn take_dead_letters(
        &self,
        filter: Option<NativeRetryFilter>,
    ) -> Result<serde_json::Value> {
        let taken = self
            .engine()?
            .dead
            .take(&dead_letter_filter(filter))
            .map_err(|e| Error::from_reason(e.to_string()))?;
        serde_json::to_value(taken).map_err(|e| Error::from_reason(e.to_string()))
    }

    #[napi]
    pub fn retry_dead_letters(&self, filter: Option<NativeRetryFilter>) -> Result<u32> {
        let n = self
            .engine()?
            .retry_dead_letters(&dead_letter_filter(filter))
            .map_err(to_napi)?;
        Ok(n as u32)
    }
}
