//! Disk work that may block (fsync, rewriting a small file) called from the
//! engine's runtime. On Windows one `FlushFileBuffers` can take tens of
//! milliseconds; run on a runtime worker it would stall every lane and every
//! connection scheduled there. [`off_runtime`] hands that worker's other tasks
//! to another thread for the duration, so only the calling task waits.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which may block on the disk, without holding up the runtime's
/// other tasks. Outside a runtime (a call from JS) or on a current-thread
/// runtime (tests) it simply runs `f`.
pub fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// On a one-worker runtime, a task blocked inside `off_runtime` until
    /// another task has run must not wait forever: the other task gets a
    /// thread. (Without `off_runtime` the one worker is taken and this
    /// times out.)
    #[test]
    fn a_blocked_call_leaves_the_other_tasks_running() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (ran_tx, ran_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<bool>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        rt.spawn(async move {
            let released = off_runtime(|| {
                let _ = started_tx.send(());
                ran_rx.recv_timeout(Duration::from_secs(20)).is_ok()
            });
            let _ = done_tx.send(released);
        });
        started_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the blocking task started");
        rt.spawn(async move {
            let _ = ran_tx.send(());
        });
        let released = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the blocking task finished");
        assert!(released, "the other task never ran while one blocked");
    }

    #[test]
    fn outside_a_runtime_it_just_runs() {
        assert_eq!(off_runtime(|| 7), 7);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(rt.block_on(async { off_runtime(|| 8) }), 8);
    }
}
