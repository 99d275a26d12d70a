//! Opening a journal directory: read the checkpoint, drop acknowledged
//! segments, scan the rest, skip corrupt records, cut a torn tail, and pick
//! the segment the writer continues in.

use super::record::{offset_of, position, record_len, segment_of};
use super::walk::{Item, Scanner};
use super::{checkpoint, segment, CorruptRecord, JournalError, Recovery};
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::Path;

pub(super) struct Opened {
    pub recovery: Recovery,
    /// Live segments: number → length (the writer's entry is its length at open).
    pub segs: BTreeMap<u64, u64>,
    pub writer_seg: u64,
    pub writer_file: File,
    pub writer_len: u64,
    /// Positions of the corrupt records found, so readers don't count them again.
    pub corrupt_at: HashSet<u64>,
}

pub(super) fn open_dir(dir: &Path, persist: bool) -> Result<Opened, JournalError> {
    let mut dir_changed = false;
    if !persist {
        for (n, _) in segment::list(dir)? {
            segment::remove(&segment::path(dir, n))?;
        }
        segment::remove(&dir.join(checkpoint::FILE))?;
    }
    segment::remove(&dir.join(checkpoint::TMP))?;

    let mut corrupt = Vec::new();
    let ckpt = match checkpoint::read(dir)? {
        Ok(p) => p.unwrap_or(0),
        Err(reason) => {
            // Replaying from the oldest segment re-sends some acknowledged
            // marks; that is harmless, while skipping any would lose writes.
            tracing::warn!("{reason}; replaying the journal from its oldest segment");
            corrupt.push(CorruptRecord {
                segment: checkpoint::FILE.to_string(),
                offset: 0,
                reason,
            });
            0
        }
    };

    let mut segs = segment::list(dir)?;
    let max_seen = segs.last().map(|s| s.0);
    let ck_seg = segment_of(ckpt);
    // Left over when a crash came between writing the checkpoint and deleting.
    for &(n, _) in segs.iter().filter(|(n, _)| *n < ck_seg) {
        segment::remove(&segment::path(dir, n))?;
        dir_changed = true;
    }
    segs.retain(|(n, _)| *n >= ck_seg);

    let mut records = 0u64;
    let mut corrupt_at = HashSet::new();
    // Bad regions reaching the end of their segment: a torn tail unless a
    // valid record turns up later, which makes them corruption in the middle.
    let mut pending: Vec<(usize, u64, &'static str)> = Vec::new();
    for (i, &(n, len)) in segs.iter().enumerate() {
        let from = if n == ck_seg { offset_of(ckpt) } else { 0 };
        if from >= len {
            continue;
        }
        let path = segment::path(dir, n);
        let file = File::open(&path).map_err(|e| JournalError::io(&path, e))?;
        let mut sc = Scanner::new(Box::new(file), n, len);
        let mut off = from;
        loop {
            let item = sc.next_item(off).map_err(|e| JournalError::io(&path, e))?;
            let mut keep_pending = |pending: &mut Vec<(usize, u64, &'static str)>| {
                for (j, o, reason) in pending.drain(..) {
                    let sn = segs[j].0;
                    corrupt_at.insert(position(sn, o));
                    corrupt.push(corrupt_record(sn, o, reason));
                }
            };
            match item {
                Item::End => break,
                Item::Record { offset, len } => {
                    keep_pending(&mut pending);
                    records += 1;
                    off = offset + record_len(len as usize);
                }
                Item::Bad {
                    offset,
                    reason,
                    resume: Some(r),
                } => {
                    pending.push((i, offset, reason.as_str()));
                    keep_pending(&mut pending);
                    off = r;
                }
                Item::Bad { offset, reason, .. } => {
                    pending.push((i, offset, reason.as_str()));
                    break;
                }
            }
        }
    }

    let mut torn_tail_bytes = 0;
    for (i, off, _) in pending {
        let (n, len) = segs[i];
        let path = segment::path(dir, n);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| {
                f.set_len(off)?;
                if persist {
                    f.sync_all()?;
                }
                Ok(())
            })
            .map_err(|e| JournalError::io(&path, e))?;
        torn_tail_bytes += len - off;
        segs[i].1 = off;
    }

    // The writer continues in the newest segment unless that would put new
    // records before the checkpoint (the file lost bytes it had).
    let (writer_seg, writer_len, create) = match segs.last() {
        Some(&(n, len)) if position(n, len) >= ckpt => (n, len, false),
        _ => {
            let after_ckpt = ck_seg + u64::from(offset_of(ckpt) > 0);
            let n = max_seen.map_or(1, |m| m + 1).max(after_ckpt).max(1);
            (n, 0, true)
        }
    };
    if writer_seg > u32::MAX as u64 {
        return Err(JournalError::SegmentsExhausted {
            dir: dir.to_path_buf(),
        });
    }
    let wpath = segment::path(dir, writer_seg);
    let writer_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(&wpath)
        .map_err(|e| JournalError::io(&wpath, e))?;
    if create {
        segs.push((writer_seg, 0));
        dir_changed = true;
    }
    if persist && dir_changed {
        segment::sync_dir(dir)?;
    }

    let first = segs.first().map_or(writer_seg, |s| s.0);
    let recovery = Recovery {
        start: ckpt.max(position(first, 0)),
        end: position(writer_seg, writer_len),
        records,
        corrupt,
        torn_tail_bytes,
    };
    Ok(Opened {
        recovery,
        segs: segs.into_iter().collect(),
        writer_seg,
        writer_file,
        writer_len,
        corrupt_at,
    })
}

fn corrupt_record(seg: u64, offset: u64, reason: &str) -> CorruptRecord {
    CorruptRecord {
        segment: segment::file_name(seg),
        offset,
        reason: reason.to_string(),
    }
}
