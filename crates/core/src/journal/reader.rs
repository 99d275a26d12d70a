//! Sequential reader that pages records back from disk while the writer keeps
//! appending. It only reads what the writer has committed (`Shared::end`), so it
//! never sees half of a batch.

use super::record::{offset_of, position, record_len, segment_of};
use super::walk::{Item, Scanner};
use super::{segment, JournalError, Shared};
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct JournalReader {
    shared: Arc<Shared>,
    pos: u64,
    scanner: Option<Scanner<File>>,
}

impl JournalReader {
    pub(super) fn new(shared: Arc<Shared>, from: u64) -> Self {
        JournalReader {
            shared,
            pos: from,
            scanner: None,
        }
    }

    /// Position of the next record this reader will look at.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Up to `max` records in position order, skipping (and counting) corrupt
    /// ones; empty once the reader has caught up with the writer.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        let mut out = Vec::new();
        while out.len() < max {
            // Acquire pairs with the writer's Release: the sealed length of an
            // older segment is in `segs` before `end` moves past it.
            let end = self.shared.end.load(Ordering::Acquire);
            if self.pos >= end {
                break;
            }
            let seg = segment_of(self.pos);
            let limit = if seg == segment_of(end) {
                Some(offset_of(end))
            } else {
                self.shared.segments_lock().get(&seg).copied()
            };
            let Some(limit) = limit.filter(|l| offset_of(self.pos) < *l) else {
                self.skip_segment(seg, end);
                continue;
            };
            let sc = match self.scanner.take() {
                Some(sc) if sc.segment() == seg => sc,
                _ => {
                    let path = segment::path(&self.shared.dir, seg);
                    match File::open(&path) {
                        Ok(f) => Scanner::new(Box::new(f), seg, limit),
                        // Acknowledged and deleted meanwhile: move on.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            self.skip_segment(seg, end);
                            continue;
                        }
                        Err(e) => return Err(JournalError::io(&path, e)),
                    }
                }
            };
            let sc = self.scanner.insert(sc);
            sc.set_limit(limit);
            let item = sc
                .next_item(offset_of(self.pos))
                .map_err(|e| JournalError::io(&segment::path(&self.shared.dir, seg), e))?;
            match item {
                Item::End => self.skip_segment(seg, end),
                Item::Record { offset, len } => {
                    out.push((self.pos, sc.payload(offset, len).to_vec()));
                    self.pos = position(seg, offset + record_len(len as usize));
                }
                Item::Bad { offset, resume, .. } => {
                    self.shared.note_corrupt(position(seg, offset));
                    self.pos = position(seg, resume.unwrap_or(limit));
                }
            }
        }
        Ok(out)
    }

    /// Moves to the start of the next live segment after `seg` (or to `end`).
    fn skip_segment(&mut self, seg: u64, end: u64) {
        self.scanner = None;
        let next = self
            .shared
            .segments_lock()
            .range(seg + 1..)
            .next()
            .map(|(n, _)| position(*n, 0));
        self.pos = next.unwrap_or(end).min(end).max(self.pos);
    }
}
