//! dualsync core: journal, queue, drain worker, reconciler and metrics.
//! No napi here; the binding in the root crate only converts types.

pub mod apply;
mod apply_verify;
pub mod blocking;
pub mod capabilities;
pub mod classify;
pub mod clients;
pub mod config;
pub mod deadletter;
pub mod engine;
pub mod jobs;
pub mod journal;
pub mod logging;
pub mod lost;
pub mod mark;
pub mod metrics;
pub mod platform;
pub mod poison;
pub mod queue;
pub mod read_limit;
pub mod reconcile;
pub mod redact;
pub mod ring;
pub mod scope;
pub mod wire;
pub mod worker;

pub use config::EngineConfig;
pub use engine::{Engine, EngineError};
