//! One process per data dir: an exclusive lock on `dir/LOCK` whose file names
//! the holder, so the process that is refused can say who has it.

use super::JournalError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const FILE: &str = "LOCK";

/// Holds the lock until dropped. The OS releases it too when the process dies,
/// so a `kill -9` never leaves a stale lock behind.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `dir/LOCK` without waiting.
    pub fn acquire(dir: &Path) -> Result<DirLock, JournalError> {
        let path = dir.join(FILE);
        // No truncate on open: the holder's details must survive our attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| JournalError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(JournalError::io(&path, e)),
        }
        let me = describe_self();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .map_err(|e| JournalError::io(&path, e))?;
        Ok(DirLock { file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first makes
        // the release immediate even if the descriptor was duplicated.
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        crate::platform::unreadable_holder().to_string()
    } else {
        s.chars().take(300).collect()
    }
}

fn describe_self() -> String {
    let started = bson::DateTime::now()
        .try_to_rfc3339_string()
        .unwrap_or_else(|_| "at an unknown time".into());
    format!(
        "pid {} on host {} (started {started})\n",
        std::process::id(),
        crate::platform::hostname()
    )
}
