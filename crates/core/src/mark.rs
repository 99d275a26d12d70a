//! A mark names one document (or one whole collection) whose Atlas copy must be
//! brought up to date. Marks carry no document bodies: the worker re-reads the
//! current state from local, which is what makes replays idempotent.

use bson::{Bson, RawBsonRef, RawDocumentBuf};
use std::sync::Arc;

/// What a mark asks the worker to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarkKind {
    /// Make Atlas hold local's current state of one document (or delete it).
    Document = 0,
    /// Reconcile a whole collection (used when a write touched too many
    /// documents to list them cheaply).
    Collection = 1,
    /// A document mark taken *before* the app's write (durable intent). It
    /// must not be applied before the write commits, so the worker holds it
    /// until a later mark of the same document arrives or a timeout passes;
    /// after a crash it is replayed as a plain document mark.
    Intent = 2,
    /// A collection mark taken before the app's write: held like `Intent`
    /// (until a later collection mark of the namespace or the timeout), so
    /// the scan does not look before the write; replayed as `Collection`.
    CollectionIntent = 3,
}

impl MarkKind {
    /// Taken before the app's write: must not act before it commits.
    pub fn is_intent(self) -> bool {
        matches!(self, MarkKind::Intent | MarkKind::CollectionIntent)
    }
}

/// Database + collection, shared by all marks of that namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    pub db: String,
    pub coll: String,
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// A mark as it lives in memory and in the journal.
#[derive(Clone, Debug)]
pub struct Mark {
    /// Journal position; orders marks and drives the checkpoint.
    pub seq: u64,
    /// Wall-clock milliseconds at enqueue, for end-to-end lag.
    pub enqueued_ms: u64,
    pub kind: MarkKind,
    pub ns: Arc<Namespace>,
    /// Raw BSON document `{ _id: <value> }`; its bytes are the identity used for
    /// coalescing (same type and value = same key). Empty doc for collection marks.
    pub id: Arc<RawDocumentBuf>,
}

/// Errors found while decoding a journal payload or validating user input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MarkError {
    #[error("{0}")]
    Invalid(String),
}

const FORMAT_VERSION: u8 = 1;

/// Builds the `{ _id: value }` identity document.
pub fn id_doc(value: Bson) -> Result<RawDocumentBuf, MarkError> {
    // Straight to raw bytes: through a `Document` it cost an IndexMap and a serde pass per
    // mark (a fifth of the ring reader's CPU); the bytes are the same.
    let raw = bson::RawBson::try_from(value)
        .map_err(|e| MarkError::Invalid(format!("id cannot be encoded as BSON: {e}")))?;
    let mut doc = RawDocumentBuf::new();
    doc.append("_id", raw);
    Ok(doc)
}

/// Extracts the `_id` value of an identity document.
pub fn id_value(id: &RawDocumentBuf) -> Option<Bson> {
    let v = id.get("_id").ok()??;
    Bson::try_from(v.to_raw_bson()).ok()
}

/// An `_id` in the form the server matches it by: numbers that are equal
/// across types (Int32 7, Int64 7, Double 7.0, and -0.0 / 0) give one key, so
/// a mark, the document it names and its lane always meet.
pub fn canonical_key(id: RawBsonRef<'_>) -> Vec<u8> {
    let mut key = RawDocumentBuf::new();
    let as_f64 = match id {
        RawBsonRef::Int32(n) => Some(n as f64),
        RawBsonRef::Int64(n) if (n as f64) as i64 == n => Some(n as f64),
        RawBsonRef::Double(f) => Some(f),
        _ => None,
    };
    match as_f64 {
        // -0.0 == 0: one key (adding 0.0 turns -0.0 into +0.0).
        Some(f) => key.append("_id", f + 0.0),
        None => key.append_ref("_id", id),
    }
    key.into_bytes()
}

/// [`canonical_key`] of a `{_id}` document; borrows its bytes when the `_id`
/// is not a number (the common case allocates nothing).
pub fn canonical_id_bytes(id: &RawDocumentBuf) -> std::borrow::Cow<'_, [u8]> {
    match id.get("_id") {
        Ok(Some(v @ (RawBsonRef::Int32(_) | RawBsonRef::Int64(_) | RawBsonRef::Double(_)))) => {
            std::borrow::Cow::Owned(canonical_key(v))
        }
        _ => std::borrow::Cow::Borrowed(id.as_bytes()),
    }
}

/// Checks a namespace the way MongoDB would reject it, so a bad mark is
/// refused at enqueue instead of failing forever in the worker.
pub fn validate_namespace(db: &str, coll: &str) -> Result<(), MarkError> {
    if coll.is_empty() {
        return Err(MarkError::Invalid(
            "collection is required (a non-empty string)".into(),
        ));
    }
    if coll.contains('\0') || coll.starts_with('$') {
        return Err(MarkError::Invalid(format!(
            "collection {coll:?} is not a valid MongoDB collection name"
        )));
    }
    if db.is_empty() || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(MarkError::Invalid(format!(
            "db {db:?} is not a valid MongoDB database name"
        )));
    }
    if db.len() > u16::MAX as usize || coll.len() > u16::MAX as usize {
        return Err(MarkError::Invalid("namespace is too long".into()));
    }
    Ok(())
}

/// Serialises a mark's body (everything but `seq`, which is its journal position).
pub fn encode(
    kind: MarkKind,
    enqueued_ms: u64,
    ns: &Namespace,
    id: &RawDocumentBuf,
    out: &mut Vec<u8>,
) {
    out.push(FORMAT_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&enqueued_ms.to_le_bytes());
    for part in [ns.db.as_bytes(), ns.coll.as_bytes()] {
        out.extend_from_slice(&(part.len() as u16).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(id.as_bytes());
}

/// Parses a journal payload back into its parts. Never panics on bad bytes.
pub fn decode(payload: &[u8]) -> Result<(MarkKind, u64, Namespace, RawDocumentBuf), MarkError> {
    let bad = |what: &str| MarkError::Invalid(format!("corrupt mark: {what}"));
    let mut rest = payload;
    let mut take = |n: usize| -> Result<&[u8], MarkError> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    if take(1)?[0] != FORMAT_VERSION {
        return Err(bad("unknown format version"));
    }
    let kind = match take(1)?[0] {
        0 => MarkKind::Document,
        1 => MarkKind::Collection,
        2 => MarkKind::Intent,
        3 => MarkKind::CollectionIntent,
        _ => return Err(bad("unknown kind")),
    };
    let enq = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad("time"))?);
    let mut strings = [String::new(), String::new()];
    for s in strings.iter_mut() {
        let len = u16::from_le_bytes(take(2)?.try_into().map_err(|_| bad("length"))?) as usize;
        *s = std::str::from_utf8(take(len)?)
            .map_err(|_| bad("namespace is not UTF-8"))?
            .to_owned();
    }
    let id = RawDocumentBuf::from_bytes(rest.to_vec()).map_err(|_| bad("id document"))?;
    // Validate every element so later reads cannot fail on this document.
    for el in id.iter() {
        el.map_err(|_| bad("id document"))?;
    }
    let [db, coll] = strings;
    Ok((kind, enq, Namespace { db, coll }, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;

    #[test]
    fn round_trips_every_id_type() {
        let ns = Namespace {
            db: "shop".into(),
            coll: "bills".into(),
        };
        for v in [
            Bson::ObjectId(ObjectId::new()),
            Bson::String("abc".into()),
            Bson::Int32(7),
            Bson::Int64(1 << 40),
            Bson::Double(2.5),
        ] {
            let id = id_doc(v.clone()).unwrap();
            let mut buf = Vec::new();
            encode(MarkKind::Document, 42, &ns, &id, &mut buf);
            let (kind, t, ns2, id2) = decode(&buf).unwrap();
            assert_eq!((kind, t, &ns2), (MarkKind::Document, 42, &ns));
            assert_eq!(id_value(&id2), Some(v));
        }
    }

    #[test]
    fn id_doc_writes_the_bytes_a_document_would() {
        // Journals written before id_doc went straight to raw bytes must still name the same keys.
        for v in [
            Bson::ObjectId(ObjectId::new()),
            Bson::String("caf\u{e9}".into()),
            Bson::Int32(-7),
            Bson::Int64(1 << 40),
            Bson::Double(-0.0),
            Bson::Decimal128("12.50".parse().unwrap()),
            Bson::DateTime(bson::DateTime::from_millis(1_700_000_000_000)),
            Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Uuid,
                bytes: vec![7; 16],
            }),
            Bson::Document(bson::doc! { "store": 3, "day": "2026-12-03" }),
            Bson::Array(vec![Bson::Int32(1), Bson::String("a".into())]),
        ] {
            let via_document =
                RawDocumentBuf::from_document(&bson::doc! { "_id": v.clone() }).unwrap();
            assert_eq!(
                id_doc(v.clone()).unwrap().as_bytes(),
                via_document.as_bytes(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = decode(&junk);
        }
        assert!(decode(&[1, 9]).is_err());
    }

    #[test]
    fn validates_namespaces() {
        assert!(validate_namespace("shop", "").is_err());
        assert!(validate_namespace("sh.op", "bills").is_err());
        assert!(validate_namespace("shop", "bills").is_ok());
    }
}
