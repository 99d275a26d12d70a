//! Property test: random appends, acks, reads and crashes (with a torn or
//! zero-filled tail, or a flipped bit anywhere) against a model of every record
//! on disk. After each reopen, recovery and readers must return exactly the
//! unacknowledged records that are intact, in order, once each; corrupt
//! regions and torn tails must be reported exactly where they are.

use super::record::{offset_of, position, record_len, segment_of};
use super::tests::{drain, files};
use super::*;
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Clone, Debug)]
enum Damage {
    None,
    /// Cut the last segment at a byte, then append that many zero bytes.
    Truncate(Index, usize),
    /// Flip one bit: (file, byte, bit).
    Flip(Index, Index, u8),
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<usize>),
    /// Acknowledge up to an unacknowledged record (or `end` when it hits the end).
    Ack(Index),
    Read(usize),
    Crash(Damage),
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0..120usize, 1 => Just(0usize), 1 => 120..3000usize]
}

fn op() -> impl Strategy<Value = Op> {
    let damage = prop_oneof![
        1 => Just(Damage::None),
        2 => (any::<Index>(), prop_oneof![3 => Just(0usize), 1 => 1..64usize])
            .prop_map(|(i, z)| Damage::Truncate(i, z)),
        3 => (any::<Index>(), any::<Index>(), 0..8u8).prop_map(|(f, b, bit)| Damage::Flip(f, b, bit)),
    ];
    prop_oneof![
        6 => prop::collection::vec(payload_len(), 1..5).prop_map(Op::Append),
        2 => any::<Index>().prop_map(Op::Ack),
        1 => (1..20usize).prop_map(Op::Read),
        2 => damage.prop_map(Op::Crash),
    ]
}

/// One record ever written and still (at least partly) on disk.
#[derive(Clone, Debug)]
struct Rec {
    pos: u64,
    payload: Vec<u8>,
    /// false once a flipped bit made it unreadable.
    live: bool,
}

impl Rec {
    fn end(&self) -> u64 {
        self.pos + record_len(self.payload.len())
    }
}

struct Harness {
    dir: tempfile::TempDir,
    segment_bytes: u64,
    journal: Option<Journal>,
    /// A reader created at open, and every position it has returned.
    follower: Option<(JournalReader, Vec<u64>)>,
    recs: Vec<Rec>,
    ckpt: u64,
    counter: u64,
}

fn fast_tempdir() -> tempfile::TempDir {
    // tmpfs makes the many checkpoint fsyncs cheap; crashes are simulated, so
    // durability against power loss is not what this test checks.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

impl Harness {
    fn new(segment_bytes: u64) -> Self {
        let mut h = Harness {
            dir: fast_tempdir(),
            segment_bytes,
            journal: None,
            follower: None,
            recs: Vec::new(),
            ckpt: 0,
            counter: 0,
        };
        let rec = h.open();
        assert_eq!((rec.records, rec.torn_tail_bytes), (0, 0));
        h.ckpt = rec.start;
        h
    }

    fn j(&self) -> &Journal {
        self.journal.as_ref().unwrap()
    }

    fn open(&mut self) -> Recovery {
        let (j, rec) = Journal::open(tests::cfg(self.dir.path(), self.segment_bytes)).unwrap();
        self.follower = Some((j.reader(rec.start), Vec::new()));
        self.journal = Some(j);
        rec
    }

    /// Intact records the journal must still deliver.
    fn expected(&self) -> Vec<(u64, Vec<u8>)> {
        self.recs
            .iter()
            .filter(|r| r.live && r.pos >= self.ckpt)
            .map(|r| (r.pos, r.payload.clone()))
            .collect()
    }

    fn append(&mut self, lens: &[usize]) {
        let payloads: Vec<Vec<u8>> = lens
            .iter()
            .map(|&n| {
                self.counter += 1;
                let c = self.counter.to_le_bytes();
                (0..n).map(|k| c[k % 8] ^ (k / 8) as u8).collect()
            })
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let pos = self.j().append(&refs).unwrap();
        let last = self.recs.last().map(|r| r.pos);
        assert!(last.is_none_or(|l| pos[0] > l), "position went back");
        // One batch = one segment, contiguous.
        for (k, w) in pos.windows(2).enumerate() {
            assert_eq!(w[1], w[0] + record_len(payloads[k].len()));
        }
        assert_eq!(
            self.j().end(),
            pos[pos.len() - 1] + record_len(payloads[payloads.len() - 1].len())
        );
        for (pos, payload) in pos.into_iter().zip(payloads) {
            self.recs.push(Rec {
                pos,
                payload,
                live: true,
            });
        }
    }

    fn ack(&mut self, idx: Index) {
        let open: Vec<u64> = self.expected().iter().map(|r| r.0).collect();
        let end = self.j().end();
        let k = idx.index(open.len() + 1);
        let target = open.get(k).copied().unwrap_or(end);
        self.j().ack_before(target).unwrap();
        self.ckpt = self.ckpt.max(target.min(end));
        assert_eq!(self.j().checkpoint(), self.ckpt);
        self.check_files();
    }

    fn check_files(&self) {
        let on_disk = files(self.dir.path());
        assert!(
            on_disk.iter().all(|f| f.0 >= segment_of(self.ckpt)),
            "acknowledged segment left: {on_disk:?}"
        );
        assert_eq!(self.j().segments(), on_disk.len());
        assert_eq!(
            self.j().disk_bytes(),
            on_disk.iter().map(|f| f.1).sum::<u64>()
        );
    }

    fn read(&mut self, max: usize) {
        let before = self.j().corrupt_skipped();
        let got = drain(self.j(), self.j().checkpoint());
        assert_eq!(got, self.expected());
        // The long-lived reader: everything it returns is a real record, in
        // order, once; it has seen every record that is still unacknowledged.
        let (mut f, mut seen) = self.follower.take().unwrap();
        loop {
            let b = f.next_batch(max).unwrap();
            if b.is_empty() {
                break;
            }
            for (pos, p) in b {
                let r = self.recs.iter().find(|r| r.pos == pos);
                assert!(
                    r.is_some_and(|r| r.live && r.payload == p),
                    "follower invented {pos:#x}"
                );
                assert!(
                    seen.last().is_none_or(|l| *l < pos),
                    "follower went back at {pos:#x}"
                );
                seen.push(pos);
            }
        }
        assert_eq!(f.position(), self.j().end());
        for (pos, _) in self.expected() {
            assert!(seen.binary_search(&pos).is_ok(), "follower missed {pos:#x}");
        }
        self.follower = Some((f, seen));
        // Corrupt regions were found by recovery already: not counted twice.
        assert_eq!(self.j().corrupt_skipped(), before);
    }

    fn crash(&mut self, damage: Damage) {
        self.follower = None;
        self.journal = None;
        let dir = self.dir.path().to_path_buf();
        let on_disk = files(&dir);
        let mut flip_at = None;
        match damage {
            Damage::None => {}
            Damage::Truncate(at, zeros) => {
                let &(n, len) = on_disk.last().unwrap();
                let b = at.index(len as usize + 1) as u64;
                let f = OpenOptions::new()
                    .write(true)
                    .open(segment::path(&dir, n))
                    .unwrap();
                f.set_len(b).unwrap();
                f.set_len(b + zeros as u64).unwrap();
            }
            Damage::Flip(file, byte, bit) => {
                let nonempty: Vec<_> = on_disk.iter().filter(|f| f.1 > 0).collect();
                if !nonempty.is_empty() {
                    let &&(n, len) = file.get(&nonempty);
                    let x = byte.index(len as usize) as u64;
                    let path = segment::path(&dir, n);
                    let mut bytes = std::fs::read(&path).unwrap();
                    bytes[x as usize] ^= 1 << bit;
                    std::fs::write(&path, &bytes).unwrap();
                    flip_at = Some(position(n, x));
                }
            }
        }
        let live_before: Vec<u64> = self.recs.iter().filter(|r| r.live).map(|r| r.pos).collect();
        self.refresh_liveness();
        if let Some(hit) = flip_at {
            // A flipped bit costs at most the record it lands in.
            let live_after: Vec<u64> = self.recs.iter().filter(|r| r.live).map(|r| r.pos).collect();
            let lost: Vec<_> = live_before
                .iter()
                .filter(|p| !live_after.contains(p))
                .collect();
            let hit_rec = self
                .recs
                .iter()
                .find(|r| r.pos <= hit && hit < r.end())
                .map(|r| r.pos);
            assert!(lost.len() <= 1 && lost.iter().all(|p| Some(**p) == hit_rec));
        }
        let (corrupt, torn) = self.simulate_recovery(&files(&dir));
        let rec = self.open();

        assert_eq!(rec.records as usize, self.expected().len());
        let got: Vec<(String, u64)> = rec
            .corrupt
            .iter()
            .map(|c| (c.segment.clone(), c.offset))
            .collect();
        assert_eq!(got, corrupt);
        assert_eq!(rec.torn_tail_bytes, torn);
        assert!(rec.start >= self.ckpt && rec.start <= rec.end);
        assert!(self.expected().first().is_none_or(|r| r.0 >= rec.start));
        assert_eq!(rec.end, self.j().end());
        assert!(self.recs.last().is_none_or(|r| r.end() <= rec.end));
        assert_eq!(drain(self.j(), rec.start), self.expected());
        assert_eq!(self.j().corrupt_skipped(), corrupt.len() as u64);
        self.ckpt = rec.start;
        self.check_files();
    }

    /// After damage, a record is intact exactly when its encoding is still in
    /// its file (zero fill can even restore the zero bytes it cut), and gone
    /// from the model when its file no longer reaches its end.
    fn refresh_liveness(&mut self) {
        for (n, len) in files(self.dir.path()) {
            let bytes = std::fs::read(segment::path(self.dir.path(), n)).unwrap();
            self.recs
                .retain(|r| segment_of(r.pos) != n || offset_of(r.end()) <= len);
            for r in self.recs.iter_mut().filter(|r| segment_of(r.pos) == n) {
                let mut enc = Vec::new();
                record::encode_into(&mut enc, r.pos, &r.payload);
                r.live = bytes[offset_of(r.pos) as usize..offset_of(r.end()) as usize] == enc[..];
            }
        }
    }

    /// What recovery must report, from the model: runs of unreadable bytes
    /// followed by a valid record are corruption (one report per run and
    /// segment); runs with nothing valid after them are a torn tail, cut off.
    fn simulate_recovery(&mut self, on_disk: &[(u64, u64)]) -> (Vec<(String, u64)>, u64) {
        let ck_seg = segment_of(self.ckpt);
        let mut corrupt = Vec::new();
        let mut pending: Vec<(u64, u64)> = Vec::new(); // (segment, run start)
        for &(n, len) in on_disk.iter().filter(|f| f.0 >= ck_seg) {
            let from = if n == ck_seg { offset_of(self.ckpt) } else { 0 };
            let mut cursor = from;
            let mut run: Option<u64> = None;
            for r in self
                .recs
                .iter()
                .filter(|r| segment_of(r.pos) == n && offset_of(r.pos) >= from)
            {
                assert_eq!(offset_of(r.pos), cursor, "model has a hole");
                cursor = offset_of(r.end());
                if r.live {
                    pending.extend(run.take().map(|s| (n, s)));
                    corrupt.extend(pending.drain(..).map(|(n, s)| (segment::file_name(n), s)));
                } else {
                    run.get_or_insert(offset_of(r.pos));
                }
            }
            if cursor < len {
                run.get_or_insert(cursor); // bytes no record accounts for
            }
            pending.extend(run.map(|s| (n, s)));
        }
        let mut torn = 0;
        for (n, s) in pending {
            let len = on_disk.iter().find(|f| f.0 == n).unwrap().1;
            torn += len - s;
            self.recs
                .retain(|r| segment_of(r.pos) != n || offset_of(r.pos) < s);
        }
        (corrupt, torn)
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn recovery_returns_exactly_the_intact_unacknowledged_records(
        segment_bytes in prop_oneof![64..600u64, 600..5000u64],
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut h = Harness::new(segment_bytes);
        for op in ops {
            match op {
                Op::Append(lens) => h.append(&lens),
                Op::Ack(i) => h.ack(i),
                Op::Read(max) => h.read(max),
                Op::Crash(d) => h.crash(d),
            }
        }
        h.crash(Damage::None);
    }
}
