//! The capture ring's layout and record format. lib/ring.js writes it; this
//! module reads it. The header carries the offsets, so JS reads them from the
//! file instead of keeping a copy; the record format is versioned by the magic.
//!
//! Header: magic (8) · capacity u32 · data offset u32 · head offset u32 ·
//! tail offset u32; head (u32, written by JS) and tail (u32, written here) sit
//! on their own cache lines. Both are byte counts that only grow (mod 2^32);
//! a record starts at `pos % capacity`.
//!
//! Record (8-aligned): len u32 · checksum u32 (FNV-1a of the bytes from
//! offset 8 to the end of the value) · kind u8 · flags u8 · db length u16 ·
//! collection length u16 · value length u16 · db · collection · value. A len
//! with the top bit set is a wrap: skip to the start of the data.

use crate::queue::NewMark;
use crate::wire::{kind, mark_from_wire, WireValue};

pub const MAGIC: &[u8; 8] = b"DSRING1\0";
pub const HEAD_OFF: usize = 64;
pub const TAIL_OFF: usize = 128;
pub const DATA_OFF: usize = 256;
pub const RECORD_HEADER: usize = 16;
pub const WRAP_BIT: u32 = 0x8000_0000;
pub const FLAG_INTENT: u8 = 1;

/// The header's bytes for a ring of `capacity` data bytes (head and tail 0).
pub fn header(capacity: u32) -> [u8; DATA_OFF] {
    let mut h = [0u8; DATA_OFF];
    h[..8].copy_from_slice(MAGIC);
    for (i, v) in [capacity, DATA_OFF as u32, HEAD_OFF as u32, TAIL_OFF as u32]
        .into_iter()
        .enumerate()
    {
        h[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    h
}

/// Whether `h` is a header this version writes, for a ring of `capacity`.
pub fn header_matches(h: &[u8], capacity: u32) -> bool {
    h.len() >= DATA_OFF && h[..24] == header(capacity)[..24]
}

pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The record length a header's three lengths call for, if it fits `max`.
pub fn record_len(head: &[u8], max: usize) -> Option<usize> {
    if head.len() < RECORD_HEADER {
        return None;
    }
    let len = u32_at(head, 0) as usize;
    let body = u16_at(head, 10) + u16_at(head, 12) + u16_at(head, 14);
    (len == align8(RECORD_HEADER + body) && len <= max).then_some(len)
}

/// Whether a whole record's checksum matches its bytes.
pub fn checksum_ok(rec: &[u8]) -> bool {
    let end = RECORD_HEADER + u16_at(rec, 10) + u16_at(rec, 12) + u16_at(rec, 14);
    end <= rec.len() && fnv1a(&rec[8..end]) == u32_at(rec, 4)
}

/// Reads one whole record (its `len` checked by [`record_len`]).
pub fn decode(rec: &[u8]) -> Result<NewMark, String> {
    let (dl, cl, vl) = (u16_at(rec, 10), u16_at(rec, 12), u16_at(rec, 14));
    let end = RECORD_HEADER + dl + cl + vl;
    if !checksum_ok(rec) {
        return Err("checksum mismatch".into());
    }
    let k = u32::from(rec[8]);
    let intent = rec[9] & FLAG_INTENT != 0;
    let text = |from: usize, to: usize, what: &str| {
        std::str::from_utf8(&rec[from..to]).map_err(|_| format!("{what} is not UTF-8"))
    };
    let db = text(RECORD_HEADER, RECORD_HEADER + dl, "database name")?;
    let coll = text(
        RECORD_HEADER + dl,
        RECORD_HEADER + dl + cl,
        "collection name",
    )?;
    let raw = &rec[RECORD_HEADER + dl + cl..end];
    let v = match k {
        kind::COLLECTION => WireValue::None,
        kind::INT32 | kind::DOUBLE | kind::DATE => {
            let b: [u8; 8] = raw
                .try_into()
                .map_err(|_| format!("a number id takes 8 bytes, got {}", raw.len()))?;
            WireValue::Num(f64::from_le_bytes(b))
        }
        kind::BSON => WireValue::Bytes(raw),
        _ => WireValue::Str(text(RECORD_HEADER + dl + cl, end, "id")?),
    };
    mark_from_wire(coll.to_owned(), db.to_owned(), k, v, intent)
        .map_err(|e| format!("collection {coll:?}: {e}"))
}

/// A record as lib/ring.js writes it (tests write the ring with this).
#[cfg(test)]
pub fn encode(db: &str, coll: &str, k: u8, v: &[u8], intent: bool) -> Vec<u8> {
    let body = db.len() + coll.len() + v.len();
    let len = align8(RECORD_HEADER + body);
    let mut r = vec![0u8; len];
    r[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    r[8] = k;
    r[9] = if intent { FLAG_INTENT } else { 0 };
    r[10..12].copy_from_slice(&(db.len() as u16).to_le_bytes());
    r[12..14].copy_from_slice(&(coll.len() as u16).to_le_bytes());
    r[14..16].copy_from_slice(&(v.len() as u16).to_le_bytes());
    let mut at = RECORD_HEADER;
    for part in [db.as_bytes(), coll.as_bytes(), v] {
        r[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let sum = fnv1a(&r[8..at]);
    r[4..8].copy_from_slice(&sum.to_le_bytes());
    r
}
