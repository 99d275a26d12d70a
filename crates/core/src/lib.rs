//! dualsync core: journal, queue, drain worker, reconciler and metrics.
//! No napi here; the binding in the root crate only converts types.

pub mod journal;
pub mod mark;
pub mod reconcile;
