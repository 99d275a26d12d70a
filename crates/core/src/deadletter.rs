//! Persisted store of documents Atlas refused permanently. Small by nature
//! (each entry is a bug or a data problem to look at), so it lives in memory
//! and is rewritten atomically on every change. The rewrite (an fsync, slow on
//! some disks) runs outside the entries' lock, so a lane resolving a document
//! never waits on another lane's write.

use crate::mark::{id_doc, id_value, Namespace};
use bson::{Bson, RawDocumentBuf};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// One dead letter, as stored and as listed to users.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub db: String,
    pub collection: String,
    /// Canonical extended JSON of the `_id`, so every BSON type round-trips.
    pub id: serde_json::Value,
    pub code: Option<i32>,
    pub message: String,
    pub attempts: u32,
    pub first_failed_at: String,
    pub last_failed_at: String,
}

impl DeadLetter {
    pub fn id_doc(&self) -> Option<RawDocumentBuf> {
        let v = Bson::try_from(self.id.clone()).ok()?;
        id_doc(v).ok()
    }

    fn key(&self) -> (String, String, String) {
        (
            self.db.clone(),
            self.collection.clone(),
            self.id.to_string(),
        )
    }
}

/// Filter for listing or retrying dead letters.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    pub collection: Option<String>,
    pub code: Option<i32>,
}

impl DeadLetterFilter {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.collection.as_ref().is_none_or(|c| *c == d.collection)
            && self.code.is_none_or(|c| d.code == Some(c))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter store {path}: {source}")]
pub struct StoreError {
    path: String,
    source: std::io::Error,
}

pub struct DeadLetterStore {
    path: Option<PathBuf>,
    entries: Mutex<Vec<DeadLetter>>,
    /// Changes made so far: a change's number orders its snapshot among the others'.
    changes: AtomicU64,
    /// The number of the change the file holds. Held while writing, so
    /// snapshots reach the file one at a time and never an older over a newer.
    written: Mutex<u64>,
}

/// The entries after one change, to write.
struct Snapshot {
    change: u64,
    bytes: Vec<u8>,
}

fn now_iso() -> String {
    bson::DateTime::now()
        .try_to_rfc3339_string()
        .unwrap_or_default()
}

impl DeadLetterStore {
    /// Opens (or creates) the store; `path` None keeps it in memory only.
    /// An unreadable file is kept aside (renamed) rather than lost.
    pub fn open(path: Option<PathBuf>) -> Result<Self, StoreError> {
        let mut entries = Vec::new();
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<Vec<DeadLetter>>(&bytes) {
                    Ok(e) => entries = e,
                    Err(e) => {
                        let aside =
                            p.with_extension(format!("corrupt-{}", crate::metrics::now_ms()));
                        tracing::error!(
                            "dead-letter store {} is unreadable ({e}); kept as {}",
                            p.display(),
                            aside.display()
                        );
                        let _ = std::fs::rename(p, aside);
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError {
                        path: p.display().to_string(),
                        source,
                    });
                }
            }
        }
        Ok(Self {
            path,
            entries: Mutex::new(entries),
            changes: AtomicU64::new(0),
            written: Mutex::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeadLetter>> {
        crate::poison::lock(&self.entries)
    }

    fn err(&self, source: std::io::Error) -> StoreError {
        StoreError {
            path: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        }
    }

    /// The entries as they are after a change, numbered; call with the
    /// entries locked (the numbers follow the changes' order). None in memory.
    fn snapshot(&self, entries: &[DeadLetter]) -> Result<Option<Snapshot>, StoreError> {
        if self.path.is_none() {
            return Ok(None);
        }
        let bytes = serde_json::to_vec_pretty(entries).map_err(|e| self.err(e.into()))?;
        let change = self.changes.fetch_add(1, Relaxed) + 1;
        Ok(Some(Snapshot { change, bytes }))
    }

    /// Writes a snapshot, with the entries unlocked. Done at once when the
    /// file already holds a later one (which includes this change).
    fn write(&self, snapshot: Option<Snapshot>) -> Result<(), StoreError> {
        let (Some(path), Some(snap)) = (&self.path, snapshot) else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        // A lane calls this: the wait for the file and its fsyncs go off the runtime (blocking.rs).
        crate::blocking::off_runtime(|| {
            let mut written = crate::poison::lock(&self.written);
            if *written >= snap.change {
                return Ok(());
            }
            let mut f = std::fs::File::create(&tmp).map_err(|e| self.err(e))?;
            f.write_all(&snap.bytes).map_err(|e| self.err(e))?;
            f.sync_all().map_err(|e| self.err(e))?;
            std::fs::rename(&tmp, path).map_err(|e| self.err(e))?;
            sync_dir(path);
            *written = snap.change;
            Ok(())
        })
    }

    /// Records a permanent failure (replacing an older entry for the same document).
    pub fn add(
        &self,
        ns: &Namespace,
        id: &RawDocumentBuf,
        code: Option<i32>,
        message: &str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let id_json = id_value(id)
            .map(|v| v.into_canonical_extjson())
            .unwrap_or(serde_json::Value::Null);
        let now = now_iso();
        let mut entry = DeadLetter {
            db: ns.db.clone(),
            collection: ns.coll.clone(),
            id: id_json,
            code,
            message: message.to_owned(),
            attempts,
            first_failed_at: now.clone(),
            last_failed_at: now,
        };
        let mut entries = self.lock();
        if let Some(pos) = entries.iter().position(|e| e.key() == entry.key()) {
            entry.first_failed_at = entries[pos].first_failed_at.clone();
            entries[pos] = entry;
        } else {
            entries.push(entry);
        }
        let snap = self.snapshot(&entries)?;
        drop(entries);
        self.write(snap)
    }

    /// Drops the entry of a document that has since been applied successfully.
    pub fn resolve(&self, ns: &Namespace, id: &RawDocumentBuf) -> Result<bool, StoreError> {
        let mut entries = self.lock();
        if entries.is_empty() {
            return Ok(false);
        }
        let id_json = id_value(id).map(|v| v.into_canonical_extjson());
        let before = entries.len();
        entries.retain(|e| {
            !(e.db == ns.db && e.collection == ns.coll && Some(&e.id) == id_json.as_ref())
        });
        if entries.len() == before {
            return Ok(false);
        }
        let snap = self.snapshot(&entries)?;
        drop(entries);
        self.write(snap)?;
        Ok(true)
    }

    pub fn list(&self, filter: &DeadLetterFilter) -> Vec<DeadLetter> {
        self.lock()
            .iter()
            .filter(|d| filter.matches(d))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns the matching entries (the caller re-queues them;
    /// if re-queueing fails it must `restore` them).
    pub fn take(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
        let mut entries = self.lock();
        let (taken, kept): (Vec<_>, Vec<_>) = entries.drain(..).partition(|d| filter.matches(d));
        *entries = kept;
        let snap = self.snapshot(&entries);
        drop(entries);
        match snap.and_then(|s| self.write(s)) {
            Ok(()) => Ok(taken),
            Err(e) => {
                // Not taken after all: back in memory, and in the file once it can be written.
                let _ = self.restore(taken);
                Err(e)
            }
        }
    }

    pub fn restore(&self, back: Vec<DeadLetter>) -> Result<(), StoreError> {
        let mut entries = self.lock();
        entries.extend(back);
        let snap = self.snapshot(&entries)?;
        drop(entries);
        self.write(snap)
    }
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = crate::platform::sync_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;

    #[test]
    fn persists_lists_resolves_and_takes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.json");
        let ns = Namespace {
            db: "shop".into(),
            coll: "bills".into(),
        };
        let oid = id_doc(Bson::ObjectId(ObjectId::new())).unwrap();
        let sid = id_doc(Bson::String("x".into())).unwrap();
        {
            let s = DeadLetterStore::open(Some(path.clone())).unwrap();
            s.add(&ns, &oid, Some(10334), "too large", 5).unwrap();
            s.add(&ns, &sid, Some(121), "validation", 5).unwrap();
            s.add(&ns, &sid, Some(121), "validation again", 6).unwrap();
            assert_eq!(s.len(), 2);
        }
        let s = DeadLetterStore::open(Some(path.clone())).unwrap();
        assert_eq!(s.len(), 2);
        let only = s.list(&DeadLetterFilter {
            code: Some(121),
            ..Default::default()
        });
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].attempts, 6);
        assert_eq!(only[0].id_doc().unwrap(), sid);
        assert!(s.resolve(&ns, &oid).unwrap());
        let taken = s.take(&DeadLetterFilter::default()).unwrap();
        assert_eq!(taken.len(), 1);
        assert!(DeadLetterStore::open(Some(path)).unwrap().is_empty());
    }

    #[test]
    fn unreadable_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.json");
        std::fs::write(&path, b"{not json").unwrap();
        let s = DeadLetterStore::open(Some(path)).unwrap();
        assert!(s.is_empty());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
        assert!(aside);
    }

    fn bill(n: i32) -> RawDocumentBuf {
        id_doc(Bson::Int32(n)).unwrap()
    }

    fn shop() -> Namespace {
        Namespace {
            db: "shop".into(),
            coll: "bills".into(),
        }
    }

    #[test]
    fn a_write_in_progress_leaves_the_entries_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.json");
        let s = std::sync::Arc::new(DeadLetterStore::open(Some(path.clone())).unwrap());
        // Another write holds the file (as a slow fsync would): this add waits for it...
        let busy = crate::poison::lock(&s.written);
        let adder = {
            let s = s.clone();
            std::thread::spawn(move || s.add(&shop(), &bill(1), Some(121), "validation", 5))
        };
        // ...while the entry is already listed and resolvable lookups do not wait.
        while s.is_empty() {
            std::thread::yield_now();
        }
        assert_eq!(s.list(&DeadLetterFilter::default()).len(), 1);
        assert!(!s.resolve(&shop(), &bill(2)).unwrap());
        drop(busy);
        adder.join().unwrap().unwrap();
        assert_eq!(DeadLetterStore::open(Some(path)).unwrap().len(), 1);
    }

    #[test]
    fn concurrent_changes_all_reach_the_file() {
        // Rounds: the order the writers reach the file in differs from run to run.
        for _ in 0..10 {
            concurrent_round();
        }
    }

    fn concurrent_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.json");
        let s = std::sync::Arc::new(DeadLetterStore::open(Some(path.clone())).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for n in 0..10 {
                        s.add(&shop(), &bill(t * 100 + n), None, "refused", 1)
                            .unwrap();
                    }
                    // Half go again: a resolve's snapshot must not be overtaken by an older add's.
                    for n in 0..5 {
                        assert!(s.resolve(&shop(), &bill(t * 100 + n)).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.len(), 40);
        assert_eq!(DeadLetterStore::open(Some(path)).unwrap().len(), 40);
    }
}
