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

// Errors of the synchronous methods (`Result<T, String>`: an `Error<String>`)
// carry the engine's own code as the JS `err.code` (`ERR_SYNC_CLOSED`,
// `ERR_SYNC_INVALID`, ...; see `EngineError::code`).

fn coded(e: EngineError) -> Error<String> {
    Error::new(e.code().to_owned(), e.to_string())
}

fn invalid(message: String) -> Error<String> {
    coded(EngineError::Invalid(message))
}

fn unknown_job(id: &str) -> Error<String> {
    invalid(format!("no job with id {id:?}"))
}

fn internal(e: impl std::fmt::Display) -> Error<String> {
    coded(EngineError::Io(e.to_string()))
}

/// napi-rs rejects a promise only with a `Status`: async methods map the
/// engine's code onto one (lib/sync.js maps it back, by code, never by text).
fn to_status(e: Error<String>) -> Error {
    let status = match e.status.as_str() {
        "ERR_SYNC_CLOSED" => Status::Cancelled,
        "ERR_SYNC_INVALID" => Status::InvalidArg,
        _ => Status::GenericFailure,
    };
    Error::new(status, e.reason.clone())
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
    pub fn new(config: NativeConfig, log: Option<LogFn>) -> Result<Self, String> {
        let cfg = config_from_js(config).map_err(invalid)?;
        let sink: Arc<dyn LogSink> = match log {
            Some(f) => Arc::new(JsLogSink(f)),
            None => Arc::new(dualsync_core::logging::StderrSink),
        };
        let engine = Engine::open(cfg, sink).map_err(coded)?;
        Ok(Self {
            inner: RwLock::new(Some(engine)),
        })
    }

    fn engine(&self) -> Result<Arc<Engine>, String> {
        self.inner
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| coded(EngineError::Closed))
    }

    /// Journals marks (one or many) with a single write. Synchronous, never
    /// waits on the network. Returns how many were accepted.
    #[napi]
    pub fn enqueue(&self, marks: Vec<NativeMark>) -> Result<u32, String> {
        let engine = self.engine()?;
        let marks = marks_from_js(marks).map_err(invalid)?;
        let n = marks.len() as u32;
        engine.enqueue(marks).map_err(coded)?;
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
        i: Option<bool>,
    ) -> Result<u32, String> {
        self.enqueue(vec![NativeMark { c, d, k, v, i }])
    }

    /// Two marks as positional arguments, journaled with one write: a
    /// write's intent with the previous write's post mark (lib/postmarks.js),
    /// without the ten property reads of `enqueue([a, b])`.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue_two(
        &self,
        c: String,
        d: String,
        k: u32,
        v: Option<Either3<String, f64, Buffer>>,
        i: Option<bool>,
        c2: String,
        d2: String,
        k2: u32,
        v2: Option<Either3<String, f64, Buffer>>,
        i2: Option<bool>,
    ) -> Result<u32, String> {
        self.enqueue(vec![
            NativeMark { c, d, k, v, i },
            NativeMark {
                c: c2,
                d: d2,
                k: k2,
                v: v2,
                i: i2,
            },
        ])
    }

    /// Metrics snapshot (plain JSON object).
    #[napi]
    pub fn metrics(&self) -> Result<serde_json::Value, String> {
        Ok(self.engine()?.metrics())
    }

    /// Resolves true once everything enqueued before the call is applied on
    /// Atlas or dead-lettered; false on timeout.
    #[napi]
    pub async fn flush(&self, timeout_ms: f64) -> Result<bool> {
        let engine = self.engine().map_err(to_status)?;
        let timeout = Duration::from_millis(timeout_ms.max(0.0) as u64);
        let handle = engine.handle().clone();
        handle
            .spawn(async move { engine.flush(timeout).await })
            .await
            .map_err(|e| Error::from_reason(e.to_string()))
    }

    /// Drains up to `drain_timeout_ms`, then stops. Resolves `{drained,
    /// lostMarks}`: whether the backlog was fully drained (the rest stays in
    /// the journal), and the lost-marks state after the last attempt to
    /// journal their reconcile reminders (`reconcilePending`: what could not be).
    #[napi]
    pub async fn close(&self, drain_timeout_ms: f64) -> Result<serde_json::Value> {
        // The engine stays reachable while it drains: marks captured during
        // the drain are still journaled (sent now or after the next start).
        let engine = match self.engine() {
            Ok(e) => e,
            Err(_) => return Ok(serde_json::json!({ "drained": true, "lostMarks": null })),
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
            let _ = tx.send((drained, engine));
        });
        let (drained, engine) = rx.await.map_err(|e| Error::from_reason(e.to_string()))?;
        let lost = engine.lost.snapshot();
        if let Ok(mut g) = self.inner.write() {
            g.take();
        }
        // Outside any async context: the engine's runtime may block to stop.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            engine.shutdown_runtime();
            drop(engine);
            let _ = tx.send(());
        });
        let _ = rx.await;
        Ok(serde_json::json!({ "drained": drained, "lostMarks": lost }))
    }

    #[napi]
    pub fn pause(&self) -> Result<(), String> {
        self.engine()?.pause();
        Ok(())
    }

    #[napi]
    pub fn resume(&self) -> Result<(), String> {
        self.engine()?.resume();
        Ok(())
    }

    /// Starts a verify (`dryRun`) or full-sync job, or returns the running
    /// one's id. Never waits on the network: a job whose servers are not
    /// reachable yet is accepted in state `waiting`.
    #[napi]
    pub fn start_job(&self, opts: convert::NativeJobOptions) -> Result<String, String> {
        let job = self
            .engine()?
            .start_job(
                opts.collections,
                opts.dry_run.unwrap_or(false),
                opts.wait_ms
                    .map(|ms| Duration::from_millis(ms.max(0.0) as u64)),
            )
            .map_err(coded)?;
        Ok(job.id().to_owned())
    }

    #[napi]
    pub fn job_snapshot(&self, id: String) -> Result<serde_json::Value, String> {
        let job = self.engine()?.job(&id).ok_or_else(|| unknown_job(&id))?;
        serde_json::to_value(job.snapshot()).map_err(internal)
    }

    #[napi]
    pub fn cancel_job(&self, id: String) -> Result<(), String> {
        self.engine()?
            .job(&id)
            .ok_or_else(|| unknown_job(&id))?
            .cancel();
        Ok(())
    }

    /// Resolves with the final snapshot once the job ends.
    #[napi]
    pub async fn wait_job(&self, id: String) -> Result<serde_json::Value> {
        let job = self
            .engine()
            .map_err(to_status)?
            .job(&id)
            .ok_or_else(|| to_status(unknown_job(&id)))?;
        let snap = job.wait().await;
        serde_json::to_value(snap).map_err(|e| Error::from_reason(e.to_string()))
    }

    #[napi]
    pub fn dead_letters(
        &self,
        filter: Option<NativeRetryFilter>,
    ) -> Result<serde_json::Value, String> {
        let list = self.engine()?.dead_letters(&dead_letter_filter(filter));
        serde_json::to_value(list).map_err(internal)
    }

    /// The capture ring's memory (header and data) as an ArrayBuffer that
    /// lib/ring.js writes marks into, or null: no ring (SYNC_CAPTURE_RING
    /// off, an fsync per append) or a runtime that cannot share memory with
    /// JS (Electron refuses external buffers). Null means marks go by call.
    #[napi]
    pub fn capture_ring<'env>(&self, env: &'env Env) -> Result<Option<ArrayBuffer<'env>>, String> {
        let Some(shared) = self.engine()?.capture_ring() else {
            return Ok(None);
        };
        let (ptr, len) = (shared.as_ptr(), shared.len());
        // SAFETY: `shared` keeps the mapping alive until the buffer's
        // finalizer drops it, after the engine itself may be gone.
        let buffer = unsafe { ArrayBuffer::from_external(env, ptr, len, shared, |_, s| drop(s)) }
            .map_err(internal)?;
        // Where external buffers are refused napi-rs hands back a copy: writes
        // into a copy would never reach the file. Asked of the engine itself,
        // not of napi-rs' own record of the pointer.
        let mut data: *mut std::ffi::c_void = std::ptr::null_mut();
        let mut got = 0usize;
        // SAFETY: `env` and `buffer` are live for the duration of this call.
        let status = unsafe {
            napi::sys::napi_get_arraybuffer_info(env.raw(), buffer.raw(), &mut data, &mut got)
        };
        if status != napi::sys::Status::napi_ok || data.cast::<u8>() != ptr || got != len {
            return Ok(None);
        }
        Ok(Some(buffer))
    }

    /// Removes dead letters from this engine's store without re-queueing
    /// them here (adoption moves them to another engine first); returns them.
    #[napi]
    pub fn take_dead_letters(
        &self,
        filter: Option<NativeRetryFilter>,
    ) -> Result<serde_json::Value, String> {
        let taken = self
            .engine()?
            .dead
            .take(&dead_letter_filter(filter))
            .map_err(internal)?;
        serde_json::to_value(taken).map_err(internal)
    }

    #[napi]
    pub fn retry_dead_letters(&self, filter: Option<NativeRetryFilter>) -> Result<u32, String> {
        let n = self
            .engine()?
            .retry_dead_letters(&dead_letter_filter(filter))
            .map_err(coded)?;
        Ok(n as u32)
    }
}

/// Scrubs the credentials of `uris` (and any URI userinfo) from `text`: the
/// one redactor, shared by the JS layer and the core.
#[napi]
pub fn scrub_secrets(text: String, uris: Vec<String>) -> String {
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    dualsync_core::redact::scrub(&text, &uris)
}

/// A MongoDB URI with its user and password replaced by `***`.
#[napi]
pub fn redact_uri(uri: String) -> String {
    dualsync_core::redact::redact_uri(&uri)
}

/// The op kinds of the wire form, name → number (the table lives in
/// `convert::kind`; lib/wire.js is checked against this).
#[napi]
pub fn op_kinds() -> std::collections::HashMap<String, u32> {
    convert::kind::TABLE
        .iter()
        .map(|(name, k)| ((*name).to_owned(), *k))
        .collect()
}
