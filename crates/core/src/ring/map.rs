//! The ring file mapped shared into this process: the one place that touches
//! its memory. JS writes into the same pages (through an external
//! ArrayBuffer) while this side reads them, so nothing here hands out a Rust
//! reference to the data: bytes are copied out with raw pointer reads, and
//! the head and tail are atomics.

use super::record::{DATA_OFF, HEAD_OFF, TAIL_OFF};
use memmap2::MmapMut;
use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering::*};

pub struct RingMap {
    /// Kept for its Drop (the unmap); never read through.
    _mmap: MmapMut,
    base: *mut u8,
    len: usize,
    capacity: u32,
}

// SAFETY: the mapping lives as long as this value; every access to its
// memory goes through `atomic` or `read`, which are safe to call from any
// thread (atomics, and copies of bytes the writer no longer touches).
unsafe impl Send for RingMap {}
unsafe impl Sync for RingMap {}

impl RingMap {
    /// Maps `file`, which must be `DATA_OFF + capacity` bytes long.
    pub fn new(file: &File, capacity: u32) -> std::io::Result<RingMap> {
        // SAFETY: the file lives in the data dir, whose lock this process
        // holds; the only other writer is the JS layer of this process, and
        // it writes only through the protocol in record.rs.
        let mut mmap = unsafe { MmapMut::map_mut(file)? };
        let len = mmap.len();
        if len != DATA_OFF + capacity as usize {
            return Err(std::io::Error::other(format!(
                "capture ring is {len} bytes, expected {}",
                DATA_OFF + capacity as usize
            )));
        }
        let base = mmap.as_mut_ptr();
        Ok(RingMap {
            _mmap: mmap,
            base,
            len,
            capacity,
        })
    }

    fn atomic(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is HEAD_OFF or TAIL_OFF, inside the mapping and
        // 4-aligned (the mapping starts on a page boundary).
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    /// How far JS has written (its Atomics.store publishes the bytes before it).
    pub fn head(&self) -> u32 {
        self.atomic(HEAD_OFF).load(Acquire)
    }

    /// How far this side has read: JS may reuse the bytes before it.
    pub fn tail(&self) -> u32 {
        self.atomic(TAIL_OFF).load(Acquire)
    }

    pub fn set_tail(&self, tail: u32) {
        self.atomic(TAIL_OFF).store(tail, Release)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Copies `out.len()` bytes of the data area from `at`; the caller keeps
    /// the range inside the data area (checked: out of range reads nothing).
    pub fn read(&self, at: usize, out: &mut [u8]) -> bool {
        if at.saturating_add(out.len()) > self.capacity as usize {
            return false;
        }
        // SAFETY: in bounds (checked above); the range is between tail and
        // head, which the writer does not touch until the tail passes it.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(DATA_OFF + at), out.as_mut_ptr(), out.len())
        };
        true
    }

    /// The header bytes as they are now.
    pub fn header(&self) -> [u8; DATA_OFF] {
        let mut h = [0u8; DATA_OFF];
        // SAFETY: the header is the first DATA_OFF bytes of the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.base, h.as_mut_ptr(), DATA_OFF) };
        h
    }

    /// Writes the header (head and tail included). Only before JS holds the
    /// buffer: at open.
    pub fn write_header(&self, h: &[u8; DATA_OFF]) {
        // SAFETY: the header is the first DATA_OFF bytes of the mapping, and
        // no one else writes it yet.
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), self.base, DATA_OFF) };
    }

    /// The whole mapping, for the binding's external ArrayBuffer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
