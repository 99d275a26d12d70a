//! The dispatcher: queue → lanes, checkpoint, journal housekeeping, and the
//! collection scans that collection marks start.

use super::*;

impl Worker {
    /// Dispatcher: queue → lanes, checkpoint, journal housekeeping.
    pub async fn run_dispatcher(self: Arc<Self>) {
        let cap = self.settings.inflight_cap.max(1);
        // With a batching interval the dispatcher polls the queue at half of
        // it instead of being woken by every enqueue.
        let eager = self.settings.interval.is_zero();
        self.queue.eager_wake.store(eager, Relaxed);
        let poll = if eager {
            Duration::from_millis(200)
        } else {
            (self.settings.interval / 2).clamp(Duration::from_millis(1), Duration::from_millis(200))
        };
        let mut last_ack = Instant::now();
        let mut last_sync = Instant::now();
        let mut acked = 0u64;
        loop {
            if self.shutdown.load(Acquire) {
                break;
            }
            let room = cap.saturating_sub(self.pending());
            let paused = self.paused.load(Acquire);
            let can_take = !paused && room > 0;
            if !paused && room == 0 && self.queue.has_waiting() {
                self.send_held_intents();
            }
            let marks = if !can_take {
                Vec::new()
            } else {
                self.queue.take(room.min(4096))
            };
            let got = marks.len();
            for m in marks {
                self.dispatch(m);
            }
            let checkpoint = {
                let map = lock(&self.inflight);
                let frontier = self.queue.frontier();
                map.keys()
                    .next()
                    .map_or(frontier, |first| (*first).min(frontier))
            };
            self.done_before.send_if_modified(|v| {
                let changed = checkpoint > *v;
                if changed {
                    *v = checkpoint;
                }
                changed
            });
            if checkpoint > acked && last_ack.elapsed() >= Duration::from_millis(200) {
                match self.queue.journal().ack_before(checkpoint) {
                    Ok(()) => acked = checkpoint,
                    Err(e) => tracing::error!("writing the journal checkpoint failed: {e}"),
                }
                last_ack = Instant::now();
            }
            if !self.settings.fsync_interval.is_zero()
                && last_sync.elapsed() >= self.settings.fsync_interval
            {
                if let Err(e) = self.queue.journal().sync() {
                    tracing::error!("journal fsync failed: {e}");
                }
                last_sync = Instant::now();
            }
            if got == 0 {
                if can_take {
                    self.queue.wake_armed.store(true, SeqCst);
                    // Pairs with the fence in `MarkQueue::enqueue`: either
                    // that enqueue sees the wake armed, or this sees its mark.
                    std::sync::atomic::fence(SeqCst);
                    // A mark that arrived between take() and arming found
                    // the wake disarmed: look again instead of sleeping.
                    // (Memory only: spilled marks wait for the next poll,
                    // so a disk counter that is off can never spin here.)
                    if self.queue.wants_dispatcher_from_memory() {
                        continue;
                    }
                }
                tokio::select! {
                    _ = self.queue.notify.notified() => {}
                    _ = self.dispatcher_wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
        // Final checkpoint so a clean restart replays as little as possible.
        let checkpoint = *self.done_before.borrow();
        if let Err(e) = self.queue.journal().ack_before(checkpoint) {
            tracing::error!("writing the final journal checkpoint failed: {e}");
        }
        if let Err(e) = self.queue.journal().sync() {
            tracing::error!("final journal fsync failed: {e}");
        }
    }

    fn dispatch(self: &Arc<Self>, m: Mark) {
        match m.kind {
            MarkKind::Document | MarkKind::Intent => {
                self.hold(m.seq, 1);
                let intent = m.kind == MarkKind::Intent;
                self.route(DocKey { ns: m.ns, id: m.id }, m.seq, m.enqueued_ms, intent);
            }
            MarkKind::Collection => {
                // Held until the scan has journaled a mark for every difference.
                self.hold(m.seq, 1);
                self.active_scans.fetch_add(1, SeqCst);
                let scanner = lock(&self.scanner).clone();
                let me = self.clone();
                tokio::spawn(async move { me.scan_collection(scanner, m).await });
            }
        }
    }

    async fn scan_collection(self: Arc<Self>, scanner: Option<CollectionScanner>, m: Mark) {
        // Scan only once every earlier mark is applied: a batch still in
        // flight could otherwise land after the scan looked and leave a state
        // that no later mark corrects (this mark *is* the correction).
        let mut done = self.done_before.subscribe();
        let _ = done
            .wait_for(|d| *d >= m.seq || self.shutdown.load(Acquire))
            .await;
        if self.shutdown.load(Acquire) {
            self.active_scans.fetch_sub(1, SeqCst);
            return; // not released: replayed from the journal at next start
        }
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        loop {
            let Some(scanner) = scanner.as_ref() else {
                tracing::error!(
                    "collection mark for {} ignored: no reconciler configured",
                    m.ns
                );
                break;
            };
            match scanner(m.ns.clone()).await {
                Ok(repairs) => {
                    tracing::info!(
                        "reconciled {}: {repairs} document(s) queued for repair",
                        m.ns
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!("reconciling {} failed, will retry: {e}", m.ns);
                    if self.shutdown.load(Acquire) {
                        // Not released: the mark stays in the journal for the next start.
                        self.active_scans.fetch_sub(1, SeqCst);
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        self.scans_completed.fetch_add(1, SeqCst);
        self.active_scans.fetch_sub(1, SeqCst);
        self.release(&[m.seq]);
    }
}
