//! The checkpoint file: the position before which everything is acknowledged.
//! Written to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced, so a crash leaves either the old or the new value.

use super::{segment, JournalError};
use std::io::Write;
use std::path::Path;

pub const FILE: &str = "CHECKPOINT";
pub const TMP: &str = "CHECKPOINT.tmp";
const MAGIC: &[u8; 8] = b"DSJCKPT1";
const LEN: usize = 20; // magic + u64 position + CRC32 of both

/// The stored position, `Ok(None)` when there is none yet, or `Err(reason)`
/// when the file exists but cannot be trusted.
pub fn read(dir: &Path) -> Result<Result<Option<u64>, String>, JournalError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(JournalError::io(&path, e)),
    };
    if bytes.len() != LEN || &bytes[..8] != MAGIC {
        return Ok(Err(format!(
            "checkpoint file {} is not a dualsync checkpoint ({} bytes)",
            path.display(),
            bytes.len()
        )));
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc32fast::hash(&bytes[..16]) != crc {
        return Ok(Err(format!(
            "checkpoint file {} fails its checksum",
            path.display()
        )));
    }
    let mut pos = [0u8; 8];
    pos.copy_from_slice(&bytes[8..16]);
    Ok(Ok(Some(u64::from_le_bytes(pos))))
}

/// Durably replaces the checkpoint with `pos`.
pub fn write(dir: &Path, pos: u64) -> Result<(), JournalError> {
    let mut bytes = [0u8; LEN];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&pos.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(TMP);
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .map_err(|e| JournalError::io(&tmp, e))?;
    let path = dir.join(FILE);
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, e))?;
    segment::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Ok(None));
        write(dir.path(), 0x1_0000_0042).unwrap();
        write(dir.path(), 0x2_0000_0007).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Ok(Some(0x2_0000_0007)));
        let path = dir.path().join(FILE);
        let mut b = std::fs::read(&path).unwrap();
        b[9] ^= 4;
        std::fs::write(&path, &b).unwrap();
        let err = read(dir.path()).unwrap().unwrap_err();
        assert!(
            err.contains("checksum") && err.contains("CHECKPOINT"),
            "{err}"
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(read(dir.path()).unwrap().is_err());
    }
}
