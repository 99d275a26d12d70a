//! Journal errors; every message names the file or directory involved.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process (or another `Journal` in this one) holds `dir/LOCK`.
    #[error("data dir {} is in use by {holder}; each process needs its own data dir", dir.display())]
    Locked { dir: PathBuf, holder: String },
    #[error("journal I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid journal config for {}: {reason}", dir.display())]
    Config { dir: PathBuf, reason: String },
    /// One batch larger than a segment can address (4 GiB).
    #[error("journal batch of {bytes} bytes does not fit in a segment of {} (at most {max} bytes)", dir.display())]
    TooLarge { dir: PathBuf, bytes: u64, max: u64 },
    /// A failed write could not be undone; appending could corrupt the journal.
    #[error("journal in {} cannot take more writes: {reason}", dir.display())]
    Broken { dir: PathBuf, reason: String },
    #[error("journal in {} has used up its segment numbers", dir.display())]
    SegmentsExhausted { dir: PathBuf },
}

impl JournalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
