//! The capture ring: a file in the data dir, mapped shared into the process,
//! where the JS plugin writes its marks without a native call (lib/ring.js).
//! A write to mapped pages is in the kernel's page cache at once, so it
//! survives `kill -9` like the journal's `pwrite`; the engine moves the
//! ring's marks into the journal every few milliseconds (and before anything
//! that must see them: an enqueue by call, flush, metrics, close), then
//! advances the tail. A crash before that replays the ring at the next open.
//! Marks are idempotent, so a mark journaled twice (a crash between the
//! journal write and the tail) costs one extra re-read.

mod map;
pub mod record;
// The tests write the file with unix positional writes.
#[cfg(all(test, unix))]
mod tests;

use crate::queue::NewMark;
use map::RingMap;
use record::{align8, decode, header, header_matches, record_len, u32_at, RECORD_HEADER, WRAP_BIT};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use map::RingMap as SharedRing;

pub const FILE: &str = "capture-ring";
/// 1 MiB: about 16 000 marks, far more than an app writes between two reads.
pub const CAPACITY: u32 = 1 << 20;
/// How long a record that does not read (its length or checksum) is waited
/// for before it is skipped: a writer's bytes not visible yet behind its head
/// (never seen on x86; guarded against on weaker memory models).
const SUSPECT_WAIT: Duration = Duration::from_millis(50);

/// What one read of the ring found.
#[derive(Default)]
pub struct Taken {
    pub marks: Vec<NewMark>,
    /// Records that could not be read, each with why.
    pub skipped: Vec<String>,
}

#[derive(Default)]
struct Reader {
    /// How far the marks are read (and journaled, or handed to the caller).
    tail: u32,
    /// A record that did not read (length or checksum) while JS may still be
    /// writing, and when a read first found it so.
    suspect: Option<(u32, Instant)>,
    /// At open: the tail after the replayed records, stored once the engine
    /// journaled them ([`CaptureRing::commit_replay`]).
    replayed: Option<u32>,
}

pub struct CaptureRing {
    path: std::path::PathBuf,
    map: Arc<RingMap>,
    reader: Mutex<Reader>,
}

/// Gives the file `len` bytes of zeros, written (not a sparse `set_len`):
/// JS writes into the mapping can find no block to fill, which is SIGBUS, not
/// an error, on a disk that has filled up since.
fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    file.set_len(0)?;
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(0))?;
    let zeros = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

/// Whether to wait (stop reading here for now) for the record at `tail`,
/// which did not read: yes until it has not read for [`SUSPECT_WAIT`].
fn wait_for(suspect: &mut Option<(u32, Instant)>, tail: u32) -> bool {
    match *suspect {
        Some((t, since)) if t == tail => since.elapsed() < SUSPECT_WAIT,
        _ => {
            *suspect = Some((tail, Instant::now()));
            true
        }
    }
}

impl CaptureRing {
    /// Opens (or creates) the ring in `dir`. `replay`: return the marks a
    /// previous process wrote and the engine did not take (else start empty).
    /// A ring file that cannot be read is started afresh, its loss reported
    /// in `skipped`.
    pub fn open(dir: &Path, capacity: u32, replay: bool) -> std::io::Result<(CaptureRing, Taken)> {
        if !capacity.is_power_of_two() || (capacity as usize) < 4 * RECORD_HEADER {
            return Err(std::io::Error::other(format!(
                "capture ring capacity {capacity} is not a power of two ≥ 64"
            )));
        }
        let path = dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let want = (record::DATA_OFF + capacity as usize) as u64;
        let mut out = Taken::default();
        let size = file.metadata()?.len();
        if size != want {
            if size != 0 && replay {
                out.skipped.push(format!(
                    "capture ring file {} is {size} bytes, not {want}: its marks could not be read",
                    path.display()
                ));
            }
            if let Err(e) = allocate(&file, want) {
                // Whatever was written of it would only take space from the journal.
                let _ = file.set_len(0);
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        }
        let map = Arc::new(RingMap::new(&file, capacity)?);
        let ring = CaptureRing {
            path: path.clone(),
            map,
            reader: Mutex::new(Reader::default()),
        };
        let h = ring.map.header();
        if header_matches(&h, capacity) && replay {
            let mut r = ring.lock();
            r.tail = u32_at(&h, record::TAIL_OFF);
            let (t, tail) = ring.read(&mut r, false);
            out.marks = t.marks;
            out.skipped.extend(t.skipped);
            // Not stored yet: the marks are only in memory until the engine journals them.
            r.tail = tail;
            r.replayed = Some(tail);
        } else {
            if replay && size == want && h.iter().any(|&b| b != 0) {
                out.skipped.push(format!(
                    "capture ring file {} has an unknown header: its marks could not be read",
                    path.display()
                ));
            }
            ring.map.write_header(&header(capacity));
            ring.lock().tail = 0;
        }
        Ok((ring, out))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reader> {
        // A panic while holding it cannot leave the tail half-moved: keep going.
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the tail past the records `open` replayed: call once they are
    /// journaled. Until then a crash (or a failed open) replays them again.
    pub fn commit_replay(&self) {
        let mut r = self.lock();
        if let Some(tail) = r.replayed.take() {
            self.map.set_tail(tail);
        }
    }

    /// Ends a ring this engine replayed but will not share: removes the file
    /// (no store into the mapping, which a copy-on-write filesystem on a full
    /// disk could answer with SIGBUS); where it cannot be removed while mapped
    /// (Windows), commits the replay instead.
    pub fn retire(&self) {
        if std::fs::remove_file(&self.path).is_err() {
            self.commit_replay();
        }
    }

    /// Whether JS has written marks not taken yet (one atomic load).
    pub fn pending(&self) -> bool {
        self.map.head() != self.map.tail()
    }

    /// The mapping, for the binding to hand to JS; it outlives the engine
    /// for as long as JS holds the buffer.
    pub fn shared(&self) -> Arc<SharedRing> {
        self.map.clone()
    }

    /// The records from `r.tail` to the head, and the tail after them.
    fn read(&self, r: &mut Reader, live: bool) -> (Taken, u32) {
        let head = self.map.head();
        let cap = self.map.capacity() as usize;
        let mut out = Taken::default();
        let mut tail = r.tail;
        let mut buf = Vec::new();
        while tail != head {
            let avail = head.wrapping_sub(tail) as usize;
            let at = (tail % self.map.capacity()) as usize;
            let room = (cap - at).min(avail);
            let mut first = [0u8; RECORD_HEADER];
            let n = RECORD_HEADER.min(room);
            let len0 = if avail <= cap && n >= 4 && self.map.read(at, &mut first[..n]) {
                Some(u32_at(&first, 0))
            } else {
                None
            };
            let len = match len0 {
                Some(w)
                    if w & WRAP_BIT != 0
                        && (w & !WRAP_BIT) as usize == cap - at
                        && cap - at <= avail =>
                {
                    tail = tail.wrapping_add(w & !WRAP_BIT);
                    continue;
                }
                Some(_) => record_len(&first[..n], room),
                None => None,
            };
            let readable = match len {
                Some(len) => {
                    buf.resize(len, 0);
                    self.map.read(at, &mut buf) && record::checksum_ok(&buf)
                }
                None => false,
            };
            if !readable && live && wait_for(&mut r.suspect, tail) {
                break;
            }
            r.suspect = None;
            let Some(len) = len else {
                // Without a length there is no next record to find: skip to the head.
                out.skipped.push(format!(
                    "record at {tail} has no valid length; {avail} bytes up to the head skipped"
                ));
                tail = head;
                break;
            };
            match decode(&buf) {
                Ok(m) => out.marks.push(m),
                Err(e) => out.skipped.push(format!("record at {tail}: {e}")),
            }
            tail = tail.wrapping_add(align8(len) as u32);
        }
        (out, tail)
    }

    /// Reads every record written so far and hands them to `keep`; the tail
    /// moves past them only after `keep` returns, so a crash in between
    /// replays them instead of losing them. `live`: JS may still be writing
    /// (a record that does not read is waited for before it counts).
    pub fn drain(&self, live: bool, keep: impl FnOnce(Taken)) {
        let mut r = self.lock();
        let (out, tail) = self.read(&mut r, live);
        keep(out);
        // Unchanged, it is not stored: a store dirties the page, and the file's
        // mtime is part of what tells the adopter a sibling dir changed.
        if tail != r.tail {
            r.tail = tail;
            self.map.set_tail(tail);
        }
    }
}
