//! The one poisoned-mutex policy: a panic in another thread while it held a
//! lock must not make the state behind it unreachable (metrics, queue, dead
//! letters stay usable; the data is plain values, valid after any panic).

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
