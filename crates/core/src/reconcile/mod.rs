//! Reconciler: compares local and Atlas collection by collection (`verify`)
//! and, in a full sync, asks the normal queue to repair every difference so
//! Atlas only ever has one writer (the drain worker).

pub mod job;
pub mod mergejoin;
mod number;
pub mod order;
pub mod verify;

pub use job::{
    spawn_job, spawn_job_when, ConnectFn, Job, JobOptions, JobProgress, JobSnapshot, RepairFn,
};
pub use mergejoin::{
    merge_scan, CollectionReport, Diff, Lookup, ScanContext, ScanError, ScanProgress, Side,
};
pub use order::compare_values;
pub use verify::{
    estimated_count, list_sync_collections, scan_collection, ScanOptions, OWN_PREFIX,
};
