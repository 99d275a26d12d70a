//! The only place with operating-system specific file code (Unix and
//! Windows), so the journal, the lock and the dead-letter store stay portable.
//! Proven on Windows by `npm run test:platforms` (win32-x64 under wine).

use std::fs::File;
use std::io;
use std::path::Path;

/// Writes all of `buf` at `offset` without moving a shared file cursor (one
/// pwrite(2) on Unix unless the kernel splits it; WriteFile with an offset on
/// Windows, which may write less, hence the loop).
pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(file, buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads at `offset` without moving a shared file cursor. On Windows the
/// handle's cursor does move, which is harmless: every journal read and write
/// passes its own offset.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::FileExt::seek_read(file, buf, offset)
    }
}

/// Makes created, renamed and removed entries of `dir` durable. Windows
/// cannot fsync a directory handle (and NTFS journals its metadata itself),
/// so there it is a no-op; file contents are still flushed with
/// `sync_data`/`sync_all` (FlushFileBuffers).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all())
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// This machine's name, for the lock file's "held by" line.
pub fn hostname() -> String {
    let from_file = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok());
    from_file
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// What the data-dir lock's holder wrote, when this platform lets another
/// process read it. Windows locks are mandatory: the holder's bytes cannot be
/// read while it holds the lock, so the answer says that instead of guessing.
pub fn unreadable_holder() -> &'static str {
    if cfg!(windows) {
        "another process (Windows does not let us read its details while it holds the lock)"
    } else {
        "another process (it has not written its details yet)"
    }
}

/// Whether overwriting bytes a file already holds can need new disk space
/// (copy-on-write and log-structured filesystems). There a store into a
/// shared mapping of it on a full disk is SIGBUS, not an error, so the
/// capture ring is not used on them. Unknown: assumed so.
pub fn overwrite_may_allocate(path: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        // btrfs, ZFS, bcachefs, F2FS, NILFS (statfs f_type magic numbers)
        const ALLOCATING: [i64; 5] = [0x9123_683e, 0x2fc1_2fc1, 0xca45_1a4e, 0xf2f5_2010, 0x3434];
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return true;
        };
        // SAFETY: an all-zero statfs is a valid value of this plain C struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and `st` is a valid place to write.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return true;
        }
        // f_type's width differs between targets.
        #[allow(clippy::unnecessary_cast)]
        let kind = st.f_type as i64;
        ALLOCATING.contains(&kind)
    }
    #[cfg(not(target_os = "linux"))]
    {
        // NTFS (the Windows target) overwrites in place.
        let _ = path;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_writes_and_reads_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("with space").join("f");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        write_all_at(&file, b"world", 6).unwrap();
        write_all_at(&file, b"hello ", 0).unwrap();
        let mut buf = [0u8; 11];
        assert_eq!(read_at(&file, &mut buf, 0).unwrap(), 11);
        assert_eq!(&buf, b"hello world");
        sync_dir(path.parent().unwrap()).unwrap();
        assert!(!hostname().is_empty());
    }
}
