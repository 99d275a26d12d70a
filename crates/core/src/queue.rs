//! The mark queue: every mark goes to the journal first (durability), then
//! into a bounded lock-free in-memory queue. When memory is full the queue
//! "spills": later marks live only in the journal and are paged back in, in
//! order, once the memory part is drained. Enqueue never blocks on the
//! network and never drops a mark.

use crate::journal::{Journal, JournalReader};
use crate::mark::{self, Mark, MarkKind, Namespace};
use crossbeam_queue::ArrayQueue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};

/// A mark to add, before it has a journal position.
pub struct NewMark {
    pub kind: MarkKind,
    pub db: String,
    pub coll: String,
    pub id: bson::RawDocumentBuf,
}

enum Mode {
    /// Every mark since the last catch-up is in memory.
    Memory,
    /// Marks at or after this position are only on disk.
    Spilled { from: u64 },
}

struct Appender {
    mode: Mode,
    buf: Vec<u8>,
    offsets: Vec<(usize, usize)>,
}

/// Errors from enqueue. The journal error is the only failure mode.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("journal write failed: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

pub struct MarkQueue {
    journal: Arc<Journal>,
    mem: ArrayQueue<Mark>,
    appender: Mutex<Appender>,
    /// db → collection → shared namespace (a hit allocates nothing).
    namespaces: Mutex<HashMap<String, HashMap<String, Arc<Namespace>>>>,
    /// Marks written to disk only (spilled) and not yet paged back in.
    disk_pending: AtomicU64,
    /// Marks handed to the worker so far.
    taken: AtomicU64,
    /// Position just after the last mark handed to the worker.
    last_taken_next: AtomicU64,
    reader: Mutex<Option<JournalReader>>,
    pub notify: tokio::sync::Notify,
    /// Journal end at open: intents before it belong to a dead process.
    recovered_end: u64,
    /// Wake the dispatcher on every enqueue (worker interval 0). Otherwise it
    /// polls, which spares the app's thread a cross-thread wake-up per write.
    pub eager_wake: std::sync::atomic::AtomicBool,
    /// Set by the dispatcher when it waits and could take marks; the first
    /// enqueue that wants it awake clears it and wakes it. While it is paused
    /// or at its in-flight cap it does not arm, so a backlog does not cost
    /// every write a futex wake-up of a thread that would go back to sleep.
    pub wake_armed: std::sync::atomic::AtomicBool,
}

use crate::poison::lock;

impl MarkQueue {
    /// `start` is the recovery checkpoint; `end` the journal end. Anything
    /// between them (recovered marks) is read back from disk first.
    pub fn new(journal: Arc<Journal>, capacity: usize, start: u64, recovered: u64) -> Self {
        let end = journal.end();
        let mode = if start < end {
            Mode::Spilled { from: start }
        } else {
            Mode::Memory
        };
        Self {
            reader: Mutex::new(None),
            mem: ArrayQueue::new(capacity.max(1)),
            appender: Mutex::new(Appender {
                mode,
                buf: Vec::with_capacity(4096),
                offsets: Vec::new(),
            }),
            namespaces: Mutex::new(HashMap::new()),
            disk_pending: AtomicU64::new(recovered),
            taken: AtomicU64::new(0),
            last_taken_next: AtomicU64::new(start),
            notify: tokio::sync::Notify::new(),
            recovered_end: end,
            eager_wake: std::sync::atomic::AtomicBool::new(true),
            wake_armed: std::sync::atomic::AtomicBool::new(true),
            journal,
        }
    }

    fn intern(&self, db: &str, coll: &str) -> Arc<Namespace> {
        let mut map = lock(&self.namespaces);
        if let Some(ns) = map.get(db).and_then(|colls| colls.get(coll)) {
            return ns.clone();
        }
        let ns = Arc::new(Namespace {
            db: db.to_owned(),
            coll: coll.to_owned(),
        });
        map.entry(db.to_owned())
            .or_default()
            .insert(coll.to_owned(), ns.clone());
        ns
    }

    /// Journals the marks with one write, then queues them. Returns the
    /// journal position just past the last one.
    pub fn enqueue(&self, marks: Vec<NewMark>) -> Result<u64, EnqueueError> {
        if marks.is_empty() {
            return Ok(self.journal.end());
        }
        let now = crate::metrics::now_ms();
        let mut app = lock(&self.appender);
        let app = &mut *app;
        app.buf.clear();
        app.offsets.clear();
        let mut built = Vec::with_capacity(marks.len());
        for m in marks {
            let ns = self.intern(&m.db, &m.coll);
            let start = app.buf.len();
            mark::encode(m.kind, now, &ns, &m.id, &mut app.buf);
            app.offsets.push((start, app.buf.len()));
            built.push((m.kind, ns, Arc::new(m.id)));
        }
        let payloads: Vec<&[u8]> = app.offsets.iter().map(|(s, e)| &app.buf[*s..*e]).collect();
        let positions = self.journal.append(&payloads)?;
        for ((kind, ns, id), seq) in built.into_iter().zip(positions) {
            let m = Mark {
                seq,
                enqueued_ms: now,
                kind,
                ns,
                id,
            };
            match app.mode {
                Mode::Memory => {
                    if self.mem.push(m).is_err() {
                        app.mode = Mode::Spilled { from: seq };
                        self.disk_pending.fetch_add(1, Relaxed);
                    }
                }
                Mode::Spilled { .. } => {
                    self.disk_pending.fetch_add(1, Relaxed);
                }
            }
        }
        let end = self.journal.end();
        drop(payloads);
        // Pairs with the dispatcher's fence after arming (no lost wake-up).
        std::sync::atomic::fence(SeqCst);
        if self.wants_dispatcher()
            && self.wake_armed.load(Relaxed)
            && self.wake_armed.swap(false, AcqRel)
        {
            self.notify.notify_one();
        }
        Ok(end)
    }

    /// True when queued marks should be handed over now rather than at the
    /// dispatcher's next poll: every mark when the worker interval is zero,
    /// else once memory is half full.
    pub fn wants_dispatcher(&self) -> bool {
        let len = self.mem.len();
        if self.eager_wake.load(Relaxed) {
            len > 0 || self.disk_pending.load(Relaxed) > 0
        } else {
            len > 0 && len * 2 >= self.mem.capacity()
        }
    }

    /// Marks journaled but not yet taken (in memory or spilled).
    pub fn has_waiting(&self) -> bool {
        !self.mem.is_empty() || self.disk_pending.load(Relaxed) > 0
    }

    /// Like `wants_dispatcher`, counting memory only.
    pub fn wants_dispatcher_from_memory(&self) -> bool {
        let len = self.mem.len();
        len > 0 && (self.eager_wake.load(Relaxed) || len * 2 >= self.mem.capacity())
    }

    /// Takes up to `max` marks in journal order (memory first, then disk).
    /// Only one consumer (the dispatcher) may call this.
    pub fn take(&self, max: usize) -> Vec<Mark> {
        let mut out = Vec::with_capacity(max.min(1024));
        while out.len() < max {
            match self.mem.pop() {
                Some(m) => out.push(m),
                None => break,
            }
        }
        if out.len() < max && self.mem.is_empty() {
            self.page_in(max - out.len(), &mut out);
        }
        if let Some(last) = out.last() {
            self.last_taken_next.store(last.seq + 1, Release);
            self.taken.fetch_add(out.len() as u64, Relaxed);
        }
        out
    }

    fn page_in(&self, max: usize, out: &mut Vec<Mark>) {
        let from = match lock(&self.appender).mode {
            Mode::Memory => return,
            Mode::Spilled { from } => from,
        };
        let mut reader_slot = lock(&self.reader);
        let reader = reader_slot.get_or_insert_with(|| self.journal.reader(from));
        let batch = match reader.next_batch(max) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("reading spilled marks from the journal failed: {e}");
                return;
            }
        };
        let got = batch.len();
        for (seq, payload) in batch {
            match mark::decode(&payload) {
                Ok((kind, enqueued_ms, ns, id)) => {
                    // The write an old intent announced either committed or
                    // died with its process: re-read it now.
                    let kind = match kind {
                        MarkKind::Intent if seq < self.recovered_end => MarkKind::Document,
                        MarkKind::CollectionIntent if seq < self.recovered_end => {
                            MarkKind::Collection
                        }
                        k => k,
                    };
                    let ns = self.intern(&ns.db, &ns.coll);
                    out.push(Mark {
                        seq,
                        enqueued_ms,
                        kind,
                        ns,
                        id: Arc::new(id),
                    });
                }
                Err(e) => tracing::error!("skipping undecodable journal record at {seq}: {e}"),
            }
        }
        let _ = self
            .disk_pending
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(got as u64)));
        if got < max {
            // Caught up? Decide under the appender lock so no append slips between.
            let mut app = lock(&self.appender);
            if reader.position() >= self.journal.end() {
                app.mode = Mode::Memory;
                self.disk_pending.store(0, Relaxed);
                *reader_slot = None;
            }
        }
    }

    /// Position of the first mark not yet handed to the worker.
    pub fn frontier(&self) -> u64 {
        let app = lock(&self.appender);
        if self.mem.is_empty() && matches!(app.mode, Mode::Memory) {
            return self.journal.end();
        }
        self.last_taken_next.load(Acquire)
    }

    pub fn memory_len(&self) -> usize {
        self.mem.len()
    }

    pub fn disk_len(&self) -> u64 {
        self.disk_pending.load(Relaxed)
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }
}
