//! The ring read by the engine side, written as lib/ring.js writes it (through
//! the file: the mapping is shared, so its pages see those writes).

use super::record::{encode, DATA_OFF, HEAD_OFF, WRAP_BIT};
use super::*;
use crate::mark::{id_value, MarkKind};
use crate::wire::kind;
use proptest::prelude::*;
use std::os::unix::fs::FileExt;

struct Writer {
    file: std::fs::File,
    head: u32,
    cap: u32,
}

impl Writer {
    fn open(dir: &Path, cap: u32) -> Writer {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(FILE))
            .unwrap();
        let mut h = [0u8; 4];
        file.read_exact_at(&mut h, HEAD_OFF as u64).unwrap();
        Writer {
            file,
            head: u32::from_le_bytes(h),
            cap,
        }
    }

    fn tail(&self) -> u32 {
        let mut t = [0u8; 4];
        self.file
            .read_exact_at(&mut t, record::TAIL_OFF as u64)
            .unwrap();
        u32::from_le_bytes(t)
    }

    /// Writes the records and publishes them at once, as one JS call does;
    /// false (nothing published) when they do not fit.
    fn write(&mut self, recs: &[Vec<u8>]) -> bool {
        let tail = self.tail();
        let mut h = self.head;
        for r in recs {
            let at = h % self.cap;
            let room = self.cap - at;
            let mut need = r.len() as u32;
            if need > room {
                need += room;
            }
            if self.cap - h.wrapping_sub(tail) < need {
                return false;
            }
            if r.len() as u32 > room {
                self.put(at, &(WRAP_BIT | room).to_le_bytes());
                h = h.wrapping_add(room);
            }
            self.put(h % self.cap, r);
            h = h.wrapping_add(r.len() as u32);
        }
        self.head = h;
        self.file
            .write_all_at(&h.to_le_bytes(), HEAD_OFF as u64)
            .unwrap();
        true
    }

    fn put(&self, at: u32, bytes: &[u8]) {
        self.file
            .write_all_at(bytes, (DATA_OFF as u32 + at) as u64)
            .unwrap();
    }
}

fn oid_rec(n: u32, intent: bool) -> Vec<u8> {
    let hex = format!("{n:024x}");
    encode(
        "db",
        "orders",
        kind::OBJECT_ID as u8,
        hex.as_bytes(),
        intent,
    )
}

fn ids(marks: &[NewMark]) -> Vec<String> {
    marks
        .iter()
        .map(|m| match id_value(&m.id) {
            Some(bson::Bson::ObjectId(o)) => o.to_hex(),
            Some(other) => other.to_string(),
            None => format!("{}:collection", m.coll),
        })
        .collect()
}

fn drained(ring: &CaptureRing) -> Taken {
    let mut got = Taken::default();
    ring.drain(true, |t| got = t);
    got
}

#[test]
fn marks_of_every_kind_come_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, t) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    assert!(t.marks.is_empty() && t.skipped.is_empty());
    let mut w = Writer::open(dir.path(), 4096);
    let bson_id = bson::to_vec(&bson::doc! {"_id": {"a": 1}}).unwrap();
    assert!(w.write(&[
        oid_rec(1, true),
        encode("db", "c", kind::STRING as u8, "ünï".as_bytes(), false),
        encode("db", "c", kind::INT32 as u8, &7f64.to_le_bytes(), false),
        encode("db", "c", kind::DATE as u8, &1.7e12f64.to_le_bytes(), false),
        encode("db", "c", kind::INT64 as u8, b"9007199254740993", false),
        encode("db", "c", kind::BSON as u8, &bson_id, false),
        encode("db", "c", kind::COLLECTION as u8, b"", false),
    ]));
    assert!(ring.pending());
    let t = drained(&ring);
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
    assert_eq!(t.marks[0].kind, MarkKind::Intent);
    let got: Vec<Option<bson::Bson>> = t.marks.iter().map(|m| id_value(&m.id)).collect();
    use bson::Bson;
    let oid = bson::oid::ObjectId::parse_str(format!("{:024x}", 1)).unwrap();
    assert_eq!(
        got,
        [
            Some(Bson::ObjectId(oid)),
            Some(Bson::String("ünï".into())),
            Some(Bson::Int32(7)),
            Some(Bson::DateTime(bson::DateTime::from_millis(
                1_700_000_000_000
            ))),
            Some(Bson::Int64(9_007_199_254_740_993)),
            Some(Bson::Document(bson::doc! {"a": 1})),
            None
        ]
    );
    assert_eq!(t.marks[6].kind, MarkKind::Collection);
    assert!(!ring.pending());
}

#[test]
fn a_corrupt_record_is_skipped_with_its_reason_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, _) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    let mut w = Writer::open(dir.path(), 4096);
    let mut bad = oid_rec(2, false);
    bad[20] ^= 0x55; // a byte of the name: the checksum no longer matches
    assert!(w.write(&[oid_rec(1, false), bad, oid_rec(3, false)]));
    // Live, the read stops at it (JS may not have finished writing it yet)...
    let live = drained(&ring);
    assert_eq!(ids(&live.marks), [format!("{:024x}", 1)]);
    assert!(live.skipped.is_empty());
    // ...and it counts once it has not read for a while (here: a read with no writer).
    let mut rest = Taken::default();
    ring.drain(false, |t| rest = t);
    assert_eq!(ids(&rest.marks), [format!("{:024x}", 3)]);
    let skipped = rest.skipped;
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("checksum"), "{skipped:?}");
}

#[test]
fn a_garbage_length_skips_to_the_head_and_the_ring_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, _) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    let mut w = Writer::open(dir.path(), 4096);
    let mut bad = oid_rec(1, false);
    bad[0] = 3; // len no longer agrees with the header's lengths
    assert!(w.write(&[bad, oid_rec(2, false)]));
    assert!(drained(&ring).marks.is_empty()); // live: waited for
    let mut t = Taken::default();
    ring.drain(false, |x| t = x);
    assert!(t.marks.is_empty());
    assert_eq!(t.skipped.len(), 1, "{:?}", t.skipped);
    assert!(w.write(&[oid_rec(4, false)]));
    assert_eq!(ids(&drained(&ring).marks), [format!("{:024x}", 4)]);
}

#[test]
fn replayed_marks_stay_in_the_ring_until_the_engine_commits_them() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, _) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    assert!(Writer::open(dir.path(), 4096).write(&[oid_rec(1, false), oid_rec(2, true)]));
    drop(ring); // killed before the engine read them
                // An open that fails after the replay (or a crash before the journal write): not committed.
    let (first, t) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    assert_eq!(t.marks.len(), 2);
    drop(first);
    let (again, t) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    assert_eq!(
        ids(&t.marks),
        [format!("{:024x}", 1), format!("{:024x}", 2)]
    );
    again.commit_replay();
    drop(again);
    let (_, t) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    assert!(t.marks.is_empty());
}

#[test]
fn an_unreadable_ring_file_is_reported_and_started_afresh() {
    let dir = tempfile::tempdir().unwrap();
    drop(CaptureRing::open(dir.path(), 4096, true).unwrap());
    let path = dir.path().join(FILE);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"XXXX", 0).unwrap();
    let (_ring, t) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    assert_eq!(t.skipped.len(), 1, "{:?}", t.skipped);
    f.set_len(100).unwrap();
    let (_ring, t) = CaptureRing::open(dir.path(), 4096, true).unwrap();
    assert!(t.skipped[0].contains("100 bytes"), "{:?}", t.skipped);
    // A new ring is not a loss.
    let (_ring, t) = CaptureRing::open(tempfile::tempdir().unwrap().path(), 4096, true).unwrap();
    assert!(t.skipped.is_empty());
}

#[derive(Debug, Clone)]
enum Step {
    /// One JS call's marks.
    Write(Vec<bool>),
    Drain,
    /// The process dies (nothing lost from the page cache) and the ring is
    /// opened again.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec(any::<bool>(), 1..6).prop_map(Step::Write),
        2 => Just(Step::Drain),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the order of writes, reads and crashes, with records wrapping
    /// around a small ring: every published mark is read exactly once, in
    /// order, and a write that does not fit publishes nothing.
    #[test]
    fn every_published_mark_is_read_once_in_order(steps in prop::collection::vec(step(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let cap = 512;
        let (mut ring, _) = CaptureRing::open(dir.path(), cap, true).unwrap();
        let mut w = Writer::open(dir.path(), cap);
        let mut next = 0u32;
        let mut written = Vec::new();
        let mut read = Vec::new();
        for s in steps {
            match s {
                Step::Write(intents) => {
                    let recs: Vec<Vec<u8>> = intents.iter().enumerate()
                        .map(|(i, &x)| oid_rec(next + i as u32, x)).collect();
                    if w.write(&recs) {
                        written.extend((0..recs.len() as u32).map(|i| format!("{:024x}", next + i)));
                        next += recs.len() as u32;
                    }
                    // Else full: JS falls back to a native call (which drains
                    // first). A partly published write would show in `read`.
                }
                Step::Drain => {
                    let t = drained(&ring);
                    prop_assert!(t.skipped.is_empty(), "{:?}", t.skipped);
                    read.extend(ids(&t.marks));
                }
                Step::Reopen => {
                    drop(ring);
                    let (r, t) = CaptureRing::open(dir.path(), cap, true).unwrap();
                    prop_assert!(t.skipped.is_empty(), "{:?}", t.skipped);
                    read.extend(ids(&t.marks));
                    r.commit_replay(); // as the engine does once they are journaled
                    ring = r;
                    w = Writer::open(dir.path(), cap);
                }
            }
        }
        read.extend(ids(&drained(&ring).marks));
        prop_assert_eq!(read, written);
    }
}
