//! Walks the records of one segment through a bounded read window, and
//! resynchronises after corrupt bytes by searching for the next valid record.
//! Shared by recovery (limit = file length) and readers (limit = what the
//! writer has committed), and fuzzed through [`scan_bytes`].

use super::record::{self, DecodeError, HEADER_LEN, MAGIC};
use std::io;

/// Read window size; a record larger than this grows the window to fit it.
const CHUNK: usize = 64 * 1024;

/// Positional reads, so a scanner never disturbs a shared file cursor.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        crate::platform::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// What lies at an offset of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// The offset is the limit: nothing more to read.
    End,
    /// A valid record; its payload is `Scanner::payload(offset, len)`.
    Record { offset: u64, len: u32 },
    /// Bytes that are not a valid record. `resume` is the offset of the next
    /// valid record, or `None` when no valid record follows before the limit.
    Bad {
        offset: u64,
        reason: DecodeError,
        resume: Option<u64>,
    },
}

pub struct Scanner<S: ReadAt + ?Sized> {
    segment: u64,
    limit: u64,
    win_start: u64,
    win: Vec<u8>,
    src: Box<S>,
}

impl<S: ReadAt + ?Sized> Scanner<S> {
    /// Scans segment number `segment`, whose bytes `[0, limit)` are in `src`.
    pub fn new(src: Box<S>, segment: u64, limit: u64) -> Self {
        Scanner {
            segment,
            limit,
            win_start: 0,
            win: Vec::new(),
            src,
        }
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Moves the limit (a reader's segment grows while the writer appends).
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Classifies what is at `offset` (a record boundary, or where to start
    /// looking: anything else is reported as bad bytes up to the next record).
    pub fn next_item(&mut self, offset: u64) -> io::Result<Item> {
        if offset >= self.limit {
            return Ok(Item::End);
        }
        match self.record_at(offset)? {
            Ok(len) => Ok(Item::Record { offset, len }),
            Err((reason, skip)) => Ok(Item::Bad {
                offset,
                reason,
                resume: self.find_record(skip)?,
            }),
        }
    }

    /// Payload of a record `next_item` just returned.
    pub fn payload(&self, offset: u64, len: u32) -> &[u8] {
        let s = (offset - self.win_start) as usize + HEADER_LEN;
        &self.win[s..s + len as usize]
    }

    /// Validates the record at `offset`. On failure also returns where the
    /// search for the next record may start: right after the claimed record
    /// when its header is trustworthy, else the next byte.
    fn record_at(&mut self, offset: u64) -> io::Result<Result<u32, (DecodeError, u64)>> {
        let pos = record::position(self.segment, offset);
        if !self.ensure(offset, HEADER_LEN)? {
            return Ok(Err((DecodeError::TruncatedHeader, self.limit)));
        }
        let w = (offset - self.win_start) as usize;
        let h = match record::decode_header(&self.win[w..], pos) {
            Ok(h) => h,
            Err(e) => return Ok(Err((e, offset + 1))),
        };
        let total = record::record_len(h.len as usize);
        if !self.ensure(offset, total as usize)? {
            return Ok(Err((DecodeError::TruncatedPayload, offset + 1)));
        }
        let w = (offset - self.win_start) as usize;
        let payload = &self.win[w + HEADER_LEN..w + total as usize];
        Ok(match record::check_payload(&h, payload) {
            Ok(()) => Ok(h.len),
            Err(e) => Err((e, offset + total)),
        })
    }

    /// Offset of the first valid record at or after `from`.
    fn find_record(&mut self, mut from: u64) -> io::Result<Option<u64>> {
        while from + HEADER_LEN as u64 <= self.limit {
            let want = CHUNK.min((self.limit - from) as usize);
            if !self.ensure(from, want)? {
                return Ok(None);
            }
            let w = (from - self.win_start) as usize;
            let hay = &self.win[w..w + want];
            match hay.windows(MAGIC.len()).position(|c| c == MAGIC) {
                Some(i) => {
                    let cand = from + i as u64;
                    if self.record_at(cand)?.is_ok() {
                        return Ok(Some(cand));
                    }
                    from = cand + 1;
                }
                // Keep the last 3 bytes: a marker may straddle the window edge.
                None => from += (want.saturating_sub(MAGIC.len() - 1)).max(1) as u64,
            }
        }
        Ok(None)
    }

    /// Makes bytes `[offset, offset + n)` available in the window; false when
    /// they extend past the limit (or the file is shorter than the limit).
    fn ensure(&mut self, offset: u64, n: usize) -> io::Result<bool> {
        let Some(end) = offset.checked_add(n as u64) else {
            return Ok(false);
        };
        if end > self.limit {
            return Ok(false);
        }
        let win_end = self.win_start + self.win.len() as u64;
        if offset >= self.win_start && end <= win_end {
            return Ok(true);
        }
        let size = n.max(CHUNK.min((self.limit - offset) as usize));
        // Give back the memory of one huge record once we are past it.
        if self.win.capacity() > 4 * CHUNK && size <= CHUNK {
            self.win = Vec::new();
        }
        self.win.clear();
        self.win.resize(size, 0);
        self.win_start = offset;
        let mut filled = 0;
        while filled < size {
            match self
                .src
                .read_at(&mut self.win[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.win.clear();
                    return Err(e);
                }
            }
        }
        self.win.truncate(filled);
        Ok(filled >= n)
    }
}

/// Result of walking a whole in-memory segment (used by the fuzz target and tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ByteScan {
    /// (offset, payload length) of each valid record, in order.
    pub records: Vec<(u64, u32)>,
    /// (offset, end, reason) of each bad region followed by a valid record.
    pub corrupt: Vec<(u64, u64, DecodeError)>,
    /// Offset where trailing bytes without any valid record start.
    pub tail: Option<u64>,
}

/// Walks `bytes` as the contents of segment `segment`, the way recovery does.
pub fn scan_bytes(bytes: &[u8], segment: u64) -> ByteScan {
    let limit = bytes.len() as u64;
    let mut sc: Scanner<[u8]> = Scanner::new(bytes.into(), segment, limit);
    let mut out = ByteScan::default();
    let mut off = 0;
    // Reads from a slice cannot fail.
    while let Ok(item) = sc.next_item(off) {
        match item {
            Item::End => break,
            Item::Record { offset, len } => {
                out.records.push((offset, len));
                off = offset + record::record_len(len as usize);
            }
            Item::Bad {
                offset,
                reason,
                resume: Some(r),
            } => {
                out.corrupt.push((offset, r, reason));
                off = r;
            }
            Item::Bad { offset, .. } => {
                out.tail = Some(offset);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::{encode_into, position};

    fn segment(payloads: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut buf = Vec::new();
        let mut offs = Vec::new();
        for p in payloads {
            let off = buf.len() as u64;
            offs.push(off);
            encode_into(&mut buf, position(5, off), p);
        }
        (buf, offs)
    }

    #[test]
    fn clean_segment() {
        let (buf, offs) = segment(&[b"a", b"", b"ccc"]);
        let s = scan_bytes(&buf, 5);
        assert_eq!(s.records, vec![(offs[0], 1), (offs[1], 0), (offs[2], 3)]);
        assert!(s.corrupt.is_empty() && s.tail.is_none());
    }

    #[test]
    fn middle_corruption_is_skipped_and_tail_is_found() {
        let big = vec![7u8; 3 * CHUNK]; // forces window moves while resyncing
        let (mut buf, offs) = segment(&[b"one", &big, b"three", b"four"]);
        buf[offs[1] as usize + 2] ^= 0x10; // break the marker of the big record
        let cut = offs[3] as usize + 5;
        buf.truncate(cut);
        buf.extend_from_slice(&[0; 40]);
        let s = scan_bytes(&buf, 5);
        assert_eq!(s.records, vec![(offs[0], 3), (offs[2], 5)]);
        assert_eq!(s.corrupt.len(), 1);
        assert_eq!((s.corrupt[0].0, s.corrupt[0].1), (offs[1], offs[2]));
        assert_eq!(s.tail, Some(offs[3]));
    }

    #[test]
    fn resync_finds_a_marker_straddling_the_window_edge() {
        // Bad bytes at 0 start the search at 1 with a window of CHUNK bytes;
        // put the next record's marker across that window's end.
        for garbage in CHUNK - 4..=CHUNK + 1 {
            let mut buf = vec![0xFFu8; garbage];
            encode_into(&mut buf, position(5, garbage as u64), b"found");
            let s = scan_bytes(&buf, 5);
            assert_eq!(s.records, vec![(garbage as u64, 5)], "garbage {garbage}");
            assert_eq!(s.corrupt.len(), 1);
            assert_eq!((s.corrupt[0].0, s.corrupt[0].1), (0, garbage as u64));
        }
    }

    #[test]
    fn wrong_segment_number_is_all_bad() {
        let (buf, _) = segment(&[b"x", b"y"]);
        let s = scan_bytes(&buf, 6);
        assert!(s.records.is_empty());
        assert_eq!(s.tail, Some(0));
    }
}
