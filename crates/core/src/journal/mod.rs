//! Durable, append-only journal of opaque payloads (encoded marks).
//!
//! Layout of the data dir: `segment-NNNNNNNNNN.log` files of CRC-checked
//! records (see [`record`]), a `CHECKPOINT` file holding the acknowledged
//! position, and `LOCK` (see [`DirLock`]).
//!
//! Positions are `(segment << 32) | byte offset`: strictly increasing across
//! segments and restarts. The one exception is a torn tail: records cut off by
//! recovery were never durable, and the next append reuses their positions.
//!
//! Durability: [`Journal::append`] issues one `write(2)` per call, so a returned
//! append survives `kill -9`. Power loss is guarded by fsync: after every append
//! when `fsync_interval` is zero; otherwise the *caller* calls [`Journal::sync`]
//! every `fsync_interval` (the journal starts no timer and never fsyncs on the
//! append path, which is the app's hot path). `sync` runs without holding the
//! append lock, so a slow disk flush does not stall appends.

mod checkpoint;
#[cfg(test)]
mod disk_full_tests;
mod error;
mod lock;
#[cfg(test)]
mod proptests;
mod reader;
pub mod record;
mod recover;
mod segment;
#[cfg(test)]
mod tests;
pub mod walk;

pub use error::JournalError;
pub use lock::DirLock;
pub use reader::JournalReader;

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Default size after which appends move to a new segment file.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Data directory, created if missing.
    pub dir: PathBuf,
    /// Roll to a new segment file once a segment holds this many bytes
    /// (1 ..= 4 GiB - 1; a bigger single batch gets a segment of its own).
    pub segment_bytes: u64,
    /// `Duration::ZERO`: fsync inside every append. Otherwise the caller calls
    /// [`Journal::sync`] at this interval.
    pub fsync_interval: Duration,
    /// false: wipe the journal on open and never fsync (memory-only semantics,
    /// still spilling to disk). Positions then restart on every open.
    pub persist: bool,
}

impl JournalConfig {
    /// Defaults: 64 MiB segments, fsync every second, persistent.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync_interval: Duration::from_secs(1),
            persist: true,
        }
    }
}

/// What [`Journal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Checkpoint position: first record not yet acknowledged.
    pub start: u64,
    /// Position after the last valid record (where the next append goes).
    pub end: u64,
    /// Valid records in `[start, end)`.
    pub records: u64,
    /// Corrupt records skipped in the middle of the journal. An unreadable
    /// checkpoint file is listed here too (segment "CHECKPOINT"); recovery then
    /// replays from the oldest segment.
    pub corrupt: Vec<CorruptRecord>,
    /// Bytes cut from the end of the journal (a partially written last batch).
    pub torn_tail_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Segment file name.
    pub segment: String,
    /// Byte offset of the first bad byte in that file.
    pub offset: u64,
    pub reason: String,
}

pub struct Journal {
    shared: Arc<Shared>,
    _lock: DirLock,
}

/// State shared with readers. Lock order: `writer` before `segs`.
struct Shared {
    dir: PathBuf,
    persist: bool,
    segment_bytes: u64,
    sync_each: bool,
    writer: Mutex<Writer>,
    /// Committed end: position after the last fully written record.
    end: AtomicU64,
    checkpoint: AtomicU64,
    /// The in-memory checkpoint is ahead of the CHECKPOINT file (its write
    /// failed, e.g. on a full disk): the next ack retries it.
    checkpoint_dirty: std::sync::atomic::AtomicBool,
    disk_bytes: AtomicU64,
    /// Live segments: number → sealed length (the writer's entry is stale).
    segs: Mutex<BTreeMap<u64, u64>>,
    corrupt: Mutex<HashSet<u64>>,
    /// Serialises checkpoint writes and segment deletion.
    ack: Mutex<()>,
}

struct Writer {
    seg: u64,
    off: u64,
    file: Arc<File>,
    path: PathBuf,
    /// Reused for every batch: no allocation per record on the hot path.
    buf: Vec<u8>,
    /// Rolled-away segments not yet fsynced.
    unsynced: Vec<(PathBuf, Arc<File>)>,
    dir_dirty: bool,
    broken: Option<String>,
}

// A panic elsewhere must not make the journal unusable; state under these
// locks is updated so that it is consistent at every unwinding point.
use crate::poison::lock as locked;

impl Shared {
    fn segments_lock(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        locked(&self.segs)
    }

    fn note_corrupt(&self, pos: u64) {
        locked(&self.corrupt).insert(pos);
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in `cfg.dir`, taking its lock and
    /// recovering what is on disk.
    pub fn open(cfg: JournalConfig) -> Result<(Journal, Recovery), JournalError> {
        let bad = |reason: String| JournalError::Config {
            dir: cfg.dir.clone(),
            reason,
        };
        if cfg.segment_bytes == 0 || cfg.segment_bytes > record::MAX_SEGMENT_BYTES {
            return Err(bad(format!(
                "segment_bytes must be between 1 and {}, got {}",
                record::MAX_SEGMENT_BYTES,
                cfg.segment_bytes
            )));
        }
        std::fs::create_dir_all(&cfg.dir).map_err(|e| JournalError::io(&cfg.dir, e))?;
        let lock = DirLock::acquire(&cfg.dir)?;
        let o = recover::open_dir(&cfg.dir, cfg.persist)?;
        let disk: u64 = o.segs.values().sum();
        let shared = Shared {
            dir: cfg.dir.clone(),
            persist: cfg.persist,
            segment_bytes: cfg.segment_bytes,
            sync_each: cfg.fsync_interval.is_zero() && cfg.persist,
            writer: Mutex::new(Writer {
                seg: o.writer_seg,
                off: o.writer_len,
                file: Arc::new(o.writer_file),
                path: segment::path(&cfg.dir, o.writer_seg),
                buf: Vec::with_capacity(4096),
                unsynced: Vec::new(),
                dir_dirty: false,
                broken: None,
            }),
            end: AtomicU64::new(o.recovery.end),
            checkpoint: AtomicU64::new(o.recovery.start),
            checkpoint_dirty: std::sync::atomic::AtomicBool::new(false),
            disk_bytes: AtomicU64::new(disk),
            segs: Mutex::new(o.segs),
            corrupt: Mutex::new(o.corrupt_at),
            ack: Mutex::new(()),
        };
        let journal = Journal {
            shared: Arc::new(shared),
            _lock: lock,
        };
        Ok((journal, o.recovery))
    }

    /// Appends all payloads with one `write(2)` (so a returned append survives
    /// `kill -9`) and returns the position of each record. A batch is never
    /// split across segments. fsyncs before returning only when
    /// `fsync_interval` is zero.
    pub fn append(&self, payloads: &[&[u8]]) -> Result<Vec<u64>, JournalError> {
        let s = &*self.shared;
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let total: u64 = payloads.iter().map(|p| record::record_len(p.len())).sum();
        if total > record::MAX_SEGMENT_BYTES {
            return Err(JournalError::TooLarge {
                dir: s.dir.clone(),
                bytes: total,
                max: record::MAX_SEGMENT_BYTES,
            });
        }
        let mut positions = Vec::with_capacity(payloads.len());
        {
            let mut guard = locked(&s.writer);
            let w = &mut *guard;
            if let Some(reason) = &w.broken {
                return Err(JournalError::Broken {
                    dir: s.dir.clone(),
                    reason: reason.clone(),
                });
            }
            if w.off > 0 && w.off + total > s.segment_bytes {
                self.roll(w)?;
            }
            w.buf.clear();
            for p in payloads {
                let pos = record::position(w.seg, w.off + w.buf.len() as u64);
                record::encode_into(&mut w.buf, pos, p);
                positions.push(pos);
            }
            let mut written = segment::write_all_at(&w.file, &w.buf, w.off);
            if matches!(&written, Err(e) if is_storage_full(e)) && self.reclaim_acked(w) {
                // Acknowledged segments were deleted to make room: retry once.
                written = segment::write_all_at(&w.file, &w.buf, w.off);
            }
            if let Err(e) = written {
                // Cut a partial write so the next batch starts on a boundary.
                if let Err(e2) = w.file.set_len(w.off) {
                    w.broken = Some(format!(
                        "a failed write ({e}) could not be undone ({e2}) in {}",
                        w.path.display()
                    ));
                }
                return Err(JournalError::io(&w.path, e));
            }
            w.off += total;
            if w.buf.capacity() > 1 << 20 {
                w.buf = Vec::with_capacity(4096); // don't keep a huge batch's buffer
            }
            s.disk_bytes.fetch_add(total, Ordering::Relaxed);
            s.end
                .store(record::position(w.seg, w.off), Ordering::Release);
        }
        if s.sync_each {
            self.sync()?;
        }
        Ok(positions)
    }

    /// Seals the writer's segment and starts the next one.
    fn roll(&self, w: &mut Writer) -> Result<(), JournalError> {
        let s = &*self.shared;
        let next = w.seg + 1;
        if next > u32::MAX as u64 {
            return Err(JournalError::SegmentsExhausted { dir: s.dir.clone() });
        }
        let path = segment::path(&s.dir, next);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JournalError::io(&path, e))?;
        {
            let mut segs = s.segments_lock();
            segs.insert(w.seg, w.off);
            segs.insert(next, 0);
        }
        let old_path = std::mem::replace(&mut w.path, path);
        let old_file = std::mem::replace(&mut w.file, Arc::new(file));
        if s.persist {
            w.unsynced.push((old_path, old_file));
            w.dir_dirty = true;
        }
        w.seg = next;
        w.off = 0;
        Ok(())
    }

    /// Position the next append will get (== `Recovery::end` right after open).
    pub fn end(&self) -> u64 {
        self.shared.end.load(Ordering::Acquire)
    }

    /// Everything before `pos` is acknowledged: deletes the segments entirely
    /// before it, then persists the checkpoint (write-tmp, fsync, rename,
    /// fsync dir). Deleting first frees space on a full disk; a crash in
    /// between only replays acknowledged marks of the checkpoint's segment
    /// (recovery starts at the oldest segment left). Monotonic (a smaller
    /// `pos` is ignored); clamped to `end()`. A failed checkpoint write is
    /// retried by the next call.
    pub fn ack_before(&self, pos: u64) -> Result<(), JournalError> {
        let s = &*self.shared;
        let _g = locked(&s.ack);
        // Never acknowledge what has not been written yet.
        let current = s.checkpoint.load(Ordering::Acquire);
        let pos = pos.min(self.end()).max(current);
        if pos == current && !s.checkpoint_dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        s.checkpoint.store(pos, Ordering::Release);
        let mut result = self.delete_segments_before(record::segment_of(pos));
        if s.persist {
            match checkpoint::write(&s.dir, pos) {
                Ok(()) => s.checkpoint_dirty.store(false, Ordering::Release),
                Err(e) => {
                    s.checkpoint_dirty.store(true, Ordering::Release);
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Deletes every listed segment numbered below `seg` (all acknowledged).
    /// Caller holds the `ack` lock. Returns the first removal error.
    fn delete_segments_before(&self, seg: u64) -> Result<(), JournalError> {
        let s = &*self.shared;
        let doomed: Vec<(u64, u64)> = {
            let mut segs = s.segments_lock();
            let keep = segs.split_off(&seg);
            std::mem::replace(&mut *segs, keep).into_iter().collect()
        };
        let mut result = Ok(());
        for (n, len) in doomed {
            match segment::remove(&segment::path(&s.dir, n)) {
                Ok(()) => {
                    s.disk_bytes.fetch_sub(len, Ordering::Relaxed);
                }
                Err(e) => {
                    // Keep it listed; the next ack (or open) retries.
                    s.segments_lock().insert(n, len);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result
    }

    /// On a full disk: deletes the acknowledged segments, including the
    /// writer's own when everything in it is acknowledged (the writer moves
    /// to a fresh, empty segment first). Acknowledged records are on Atlas,
    /// so they are the first thing safe to give up. True if space was freed.
    fn reclaim_acked(&self, w: &mut Writer) -> bool {
        let s = &*self.shared;
        let _g = locked(&s.ack);
        let before = s.disk_bytes.load(Ordering::Relaxed);
        let ckpt = s.checkpoint.load(Ordering::Acquire);
        let _ = self.delete_segments_before(record::segment_of(ckpt));
        if w.off > 0 && ckpt >= record::position(w.seg, w.off) && self.roll(w).is_ok() {
            // Everything in the sealed segment is acknowledged. Positions and
            // the checkpoint stay as they are: readers skip a deleted segment,
            // and recovery starts at the oldest segment left.
            let sealed = w.seg - 1;
            let sealed_path = segment::path(&s.dir, sealed);
            w.unsynced.retain(|(p, _)| *p != sealed_path);
            let len = s.segments_lock().remove(&sealed);
            if let Some(len) = len {
                match segment::remove(&sealed_path) {
                    Ok(()) => {
                        s.disk_bytes.fetch_sub(len, Ordering::Relaxed);
                    }
                    Err(_) => {
                        s.segments_lock().insert(sealed, len);
                    }
                }
            }
        }
        let freed = before.saturating_sub(s.disk_bytes.load(Ordering::Relaxed));
        if freed > 0 {
            tracing::warn!(
                "journal: disk full in {}; deleted {freed} bytes of acknowledged segments",
                s.dir.display()
            );
        }
        freed > 0
    }

    /// Runs the full-disk reclaim as an append hitting ENOSPC would.
    #[cfg(test)]
    pub(crate) fn reclaim_for_test(&self) -> bool {
        let mut w = locked(&self.shared.writer);
        self.reclaim_acked(&mut w)
    }

    /// Current checkpoint: first position not acknowledged.
    pub fn checkpoint(&self) -> u64 {
        self.shared.checkpoint.load(Ordering::Acquire)
    }

    /// Sequential reader of the records from `from` (a record position, e.g.
    /// `Recovery::start`) on, following the writer. Segments deleted under it
    /// are skipped.
    pub fn reader(&self, from: u64) -> JournalReader {
        JournalReader::new(Arc::clone(&self.shared), from)
    }

    /// fsyncs the written data and new directory entries now (no-op when
    /// `persist` is false). Does not block appends while the disk flushes.
    pub fn sync(&self) -> Result<(), JournalError> {
        let s = &*self.shared;
        if !s.persist {
            return Ok(());
        }
        let (file, path, pending, dir_dirty) = {
            let mut w = locked(&s.writer);
            let pending = std::mem::take(&mut w.unsynced);
            let dir_dirty = std::mem::take(&mut w.dir_dirty);
            (Arc::clone(&w.file), w.path.clone(), pending, dir_dirty)
        };
        let restore = |pending: Vec<(PathBuf, Arc<File>)>, dir_dirty: bool| {
            let mut w = locked(&s.writer);
            w.unsynced.extend(pending);
            w.dir_dirty |= dir_dirty;
        };
        for (i, (p, f)) in pending.iter().enumerate() {
            if let Err(e) = f.sync_data() {
                restore(pending[i..].to_vec(), dir_dirty);
                return Err(JournalError::io(p, e));
            }
        }
        if let Err(e) = file.sync_data() {
            restore(Vec::new(), dir_dirty);
            return Err(JournalError::io(&path, e));
        }
        if dir_dirty {
            if let Err(e) = segment::sync_dir(&s.dir) {
                restore(Vec::new(), true);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Bytes of all live segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.disk_bytes.load(Ordering::Relaxed)
    }

    /// Number of live segment files.
    pub fn segments(&self) -> usize {
        self.shared.segments_lock().len()
    }

    /// Distinct corrupt records skipped by recovery and readers.
    pub fn corrupt_skipped(&self) -> u64 {
        locked(&self.shared.corrupt).len() as u64
    }

    /// Data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// ENOSPC / ERROR_DISK_FULL.
fn is_storage_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::warn!("journal: final fsync failed: {e}");
        }
    }
}
