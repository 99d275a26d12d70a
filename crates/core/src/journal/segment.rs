//! Segment files: names, listing, positional writes and directory fsync.

use super::JournalError;
use std::io;
use std::path::{Path, PathBuf};

const PREFIX: &str = "segment-";
const SUFFIX: &str = ".log";

/// File name of segment `n` (zero-padded so names sort like numbers).
pub fn file_name(n: u64) -> String {
    format!("{PREFIX}{n:010}{SUFFIX}")
}

pub fn path(dir: &Path, n: u64) -> PathBuf {
    dir.join(file_name(n))
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n <= u32::MAX as u64)
}

/// (number, length) of every segment file in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<(u64, u64)>, JournalError> {
    let io_err = |e| JournalError::io(dir, e);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let Some(n) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        let len = entry
            .metadata()
            .map_err(|e| JournalError::io(&entry.path(), e))?
            .len();
        out.push((n, len));
    }
    out.sort_unstable();
    Ok(out)
}

/// Removes a file; a file that is already gone is fine.
pub fn remove(path: &Path) -> Result<(), JournalError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(JournalError::io(path, e)),
        _ => Ok(()),
    }
}

/// Makes created, renamed and removed directory entries durable.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    crate::platform::sync_dir(dir).map_err(|e| JournalError::io(dir, e))
}

/// Writes all of `buf` at `offset` (see [`crate::platform::write_all_at`]).
pub use crate::platform::write_all_at;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_name(42), "segment-0000000042.log");
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(
            parse_name(&file_name(u32::MAX as u64)),
            Some(u32::MAX as u64)
        );
        assert!(file_name(9) < file_name(10));
        for bad in [
            "segment-42.log",
            "segment-00000000x2.log",
            "CHECKPOINT",
            "segment-9999999999.log",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
