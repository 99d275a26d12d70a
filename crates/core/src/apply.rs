//! One batch: re-read the current documents from local by `_id`, then make
//! Atlas hold exactly that state — replace-with-upsert what local has,
//! delete what it no longer has — with one `update` and one `delete` command
//! per namespace.

use crate::capabilities;
use crate::classify::{classify_command_error, is_transient_code, FailureClass};
use crate::clients::LazyClient;
use crate::mark::Namespace;
use crate::read_limit::ReadGate;
use crate::scope::{scoped_id, ScopeRules};
use bson::{rawdoc, RawArrayBuf, RawBsonRef, RawDocument, RawDocumentBuf};
use futures_util::future::join_all;
use futures_util::TryStreamExt;
use mongodb::Database;
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::capabilities::ReadMode;

/// What happened to one document of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum DocOutcome {
    Upserted,
    Deleted,
    /// Atlas refused this document; retry a few times, then dead-letter.
    Rejected {
        code: Option<i32>,
        message: String,
    },
    /// Applied, but local no longer holds what was sent: send it again
    /// (only with `verify_after_ack`).
    Superseded,
}

/// A batch failed as a whole for a reason expected to pass (network, election...).
#[derive(Debug)]
pub struct TransientFailure {
    pub message: String,
    /// Which server failed: only an Atlas failure means Atlas is unreachable.
    pub side: Side,
}

/// The server a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Atlas,
}

impl TransientFailure {
    pub fn local(message: String) -> Self {
        Self {
            message,
            side: Side::Local,
        }
    }
    pub fn atlas(message: String) -> Self {
        Self {
            message,
            side: Side::Atlas,
        }
    }
}

/// How write commands are cut and bounded on Atlas.
pub struct WritePlan {
    /// Statements per command.
    pub statements: usize,
    /// Permits for statements in flight over all commands, where the server needs a bound.
    pub in_flight: Option<tokio::sync::Semaphore>,
}

/// One document of a batch.
pub struct BatchDoc {
    pub ns: Arc<Namespace>,
    pub id: Arc<RawDocumentBuf>,
}

pub struct Applier {
    pub local: Arc<LazyClient>,
    pub atlas: Arc<LazyClient>,
    /// Decided once, from how the local server says it runs a `_id` `$in`.
    pub read_mode: tokio::sync::OnceCell<ReadMode>,
    /// How Atlas takes writes, decided once from its `hello` and `explain`.
    pub write_limit: tokio::sync::OnceCell<WritePlan>,
    /// Maps a local database name to its Atlas database name.
    pub atlas_db: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Each collection's scope: reads and writes only ever touch owned documents.
    pub scope: Arc<ScopeRules>,
    /// Re-read what Atlas acknowledged and report what local changed since
    /// (several processes writing one local database: see `apply_verify`).
    pub verify_after_ack: bool,
    /// Permits for reads of local: the drain yields to the app there.
    pub read_gate: Arc<ReadGate>,
}

/// Upper bound for one command's statements, well under the 16 MiB limit.
const MAX_COMMAND_BYTES: usize = 8 << 20;

pub(crate) fn id_ref(id: &RawDocument) -> Option<RawBsonRef<'_>> {
    id.get("_id").ok().flatten()
}

pub(crate) use crate::mark::canonical_key as match_key;

impl Applier {
    /// Applies a batch. `Ok` holds one outcome per input document, in order.
    pub async fn apply(&self, docs: &[BatchDoc]) -> Result<Vec<DocOutcome>, TransientFailure> {
        let mut outcomes: Vec<Option<DocOutcome>> = vec![None; docs.len()];
        let mut by_ns: HashMap<&Namespace, Vec<usize>> = HashMap::new();
        for (i, d) in docs.iter().enumerate() {
            by_ns.entry(d.ns.as_ref()).or_default().push(i);
        }
        let local = self.local.get().await.map_err(TransientFailure::local)?;
        let atlas = self.atlas.get().await.map_err(TransientFailure::atlas)?;
        // Any namespace of the batch serves as the probe's target: the answer
        // describes the server's storage, not the collection.
        let Some(probe_ns) = docs.first().map(|d| d.ns.clone()) else {
            return Ok(Vec::new());
        };
        let mode = *self
            .read_mode
            .get_or_try_init(|| async {
                let evidence =
                    capabilities::probe_filter(&local.database(&probe_ns.db), &probe_ns.coll)
                        .await
                        .map_err(|m| TransientFailure::local(format!("local {m}")))?;
                Ok::<_, TransientFailure>(capabilities::read_mode(evidence))
            })
            .await?;
        let limit = self
            .write_limit
            .get_or_try_init(|| async {
                let db = atlas.database(&(self.atlas_db)(&probe_ns.db));
                let hello = db
                    .run_command(bson::doc! { "hello": 1 })
                    .await
                    .map_err(|e| TransientFailure::atlas(format!("Atlas hello failed: {e}")))?;
                let evidence = capabilities::probe_filter(&db, &probe_ns.coll)
                    .await
                    .map_err(|m| TransientFailure::atlas(format!("Atlas {m}")))?;
                Ok::<_, TransientFailure>(WritePlan {
                    statements: capabilities::statements_per_command(&hello, evidence),
                    in_flight: capabilities::statements_in_flight(evidence)
                        .map(tokio::sync::Semaphore::new),
                })
            })
            .await?;
        for (ns, idx) in by_ns {
            let ids: Vec<&RawDocumentBuf> = idx.iter().map(|&i| docs[i].id.as_ref()).collect();
            let scope = self.scope.filter(&ns.coll);
            let current = read_local(local, &self.read_gate, mode, ns, &ids, scope).await?;
            let atlas_db = atlas.database(&(self.atlas_db)(&ns.db));
            let mut upserts = Vec::new();
            let mut deletes = Vec::new();
            for (k, &i) in idx.iter().enumerate() {
                let Some(v) = id_ref(ids[k]).filter(|_| ids[k].to_document().is_ok()) else {
                    outcomes[i] = Some(DocOutcome::Rejected {
                        code: None,
                        message: "the _id cannot be decoded".into(),
                    });
                    continue;
                };
                match current.get(&match_key(v)) {
                    Some(doc) => upserts.push((i, doc.clone())),
                    None => deletes.push(i),
                }
            }
            for (i, out) in self
                .upsert_all(&atlas_db, &ns.coll, &upserts, limit, scope)
                .await?
            {
                outcomes[i] = Some(explain_collision(out, scope));
            }
            let delete_ids: Vec<(usize, &RawDocumentBuf)> =
                deletes.iter().map(|&i| (i, docs[i].id.as_ref())).collect();
            for (i, out) in self
                .delete_all(&atlas_db, &ns.coll, &delete_ids, limit, scope)
                .await?
            {
                outcomes[i] = Some(out);
            }
            if self.verify_after_ack {
                let read = crate::apply_verify::LocalRead {
                    client: local,
                    gate: &self.read_gate,
                    mode,
                    ns,
                    scope,
                };
                crate::apply_verify::mark_superseded(read, &ids, &idx, &current, &mut outcomes)
                    .await?;
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(DocOutcome::Rejected {
                    code: None,
                    message: "internal: document was not applied".into(),
                })
            })
            .collect())
    }
}

/// A duplicate `_id` under a scope means another installation (or the cloud
/// app) owns a document with this `_id`: the scoped upsert matched nothing
/// and its insert collided. Say so in the dead letter instead of overwriting.
fn explain_collision(out: DocOutcome, scope: Option<&RawDocumentBuf>) -> DocOutcome {
    match (out, scope) {
        (DocOutcome::Rejected { code: Some(11000), message }, Some(scope)) => DocOutcome::Rejected {
            code: Some(11000),
            message: format!(
                "the _id belongs on Atlas to a document outside this installation's scope {}: left untouched ({message})",
                crate::scope::filter_json(scope)
            ),
        },
        (out, _) => out,
    }
}

/// Current local documents keyed by their `{_id}` identity bytes. Only
/// documents in `scope` are read: one outside it counts as gone, so its
/// Atlas copy is deleted only if it is in scope there (the scoped delete).
pub(crate) async fn read_local(
    local: &mongodb::Client,
    gate: &ReadGate,
    mode: ReadMode,
    ns: &Namespace,
    ids: &[&RawDocumentBuf],
    scope: Option<&RawDocumentBuf>,
) -> Result<HashMap<Vec<u8>, RawDocumentBuf>, TransientFailure> {
    let coll = local
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    let local_err = |e: mongodb::error::Error| TransientFailure {
        side: Side::Local,
        message: format!("reading {ns} from local failed: {e}"),
    };
    let mut found = HashMap::with_capacity(ids.len());
    let mut keep = |doc: RawDocumentBuf| {
        if let Some(v) = id_ref(&doc) {
            found.insert(match_key(v), doc);
        }
    };
    match mode {
        ReadMode::In => {
            let values: Vec<bson::Bson> = ids
                .iter()
                .filter_map(|id| crate::mark::id_value(id))
                .collect();
            let one_batch = u32::try_from(values.len()).unwrap_or(u32::MAX).max(1);
            let mut filter = bson::doc! { "_id": { "$in": values } };
            if let Some(scope) = scope.and_then(|s| bson::Document::try_from(s.as_ref()).ok()) {
                filter.extend(scope);
            }
            // One batch for the whole batch of ids: a getMore would resume the server's
            // streaming cursor, which on DocumentDB can list a document twice (measured on
            // the test bed), and a document the read misses would be deleted from Atlas.
            let permit = gate.acquire().await;
            let mut cursor = coll
                .find(filter)
                .batch_size(one_batch)
                .await
                .map_err(local_err)?;
            while let Some(doc) = cursor.try_next().await.map_err(local_err)? {
                keep(doc);
            }
            permit.finish(ids.len());
        }
        ReadMode::Point => {
            // All at once: the gate bounds how many reach the server (and
            // a read waits for a permit, not for the slowest of its group).
            // Identity docs were validated at enqueue; one that still fails
            // to convert is skipped here and rejected by `apply`.
            let reads = ids
                .iter()
                .filter_map(|id| scoped_id(id, scope).to_document().ok())
                .map(|filter| {
                    let coll = coll.clone();
                    async move {
                        let permit = gate.acquire().await;
                        let found = coll.find_one(filter).await;
                        if found.is_ok() {
                            permit.finish(1);
                        }
                        found
                    }
                });
            for r in join_all(reads).await {
                if let Some(doc) = r.map_err(local_err)? {
                    keep(doc);
                }
            }
        }
    }
    Ok(found)
}

impl Applier {
    async fn upsert_all(
        &self,
        db: &Database,
        coll: &str,
        docs: &[(usize, RawDocumentBuf)],
        plan: &WritePlan,
        scope: Option<&RawDocumentBuf>,
    ) -> Result<Vec<(usize, DocOutcome)>, TransientFailure> {
        let mut out = Vec::with_capacity(docs.len());
        for chunk in chunk_by_size(docs, plan.statements, |(_, d)| d.as_bytes().len()) {
            let mut updates = RawArrayBuf::new();
            let mut singles = Vec::with_capacity(chunk.len());
            for (_, doc) in chunk {
                let stmt = upsert_statement(doc, scope);
                updates.push(stmt.clone());
                let mut one = RawArrayBuf::new();
                one.push(stmt);
                singles.push(rawdoc! { "update": coll, "updates": one, "ordered": false });
            }
            let cmd = rawdoc! { "update": coll, "updates": updates, "ordered": false };
            let idx: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            out.extend(
                self.run_write(db, cmd, &idx, singles, DocOutcome::Upserted, plan)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn delete_all(
        &self,
        db: &Database,
        coll: &str,
        ids: &[(usize, &RawDocumentBuf)],
        plan: &WritePlan,
        scope: Option<&RawDocumentBuf>,
    ) -> Result<Vec<(usize, DocOutcome)>, TransientFailure> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in chunk_by_size(ids, plan.statements, |(_, id)| id.as_bytes().len()) {
            let mut deletes = RawArrayBuf::new();
            let mut singles = Vec::with_capacity(chunk.len());
            for (_, id) in chunk {
                // The scope in `q`: the server deletes only an owned document.
                let q = scoped_id(id, scope);
                deletes.push(rawdoc! { "q": q.clone(), "limit": 1 });
                let mut one = RawArrayBuf::new();
                one.push(rawdoc! { "q": q, "limit": 1 });
                singles.push(rawdoc! { "delete": coll, "deletes": one, "ordered": false });
            }
            let cmd = rawdoc! { "delete": coll, "deletes": deletes, "ordered": false };
            let idx: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            out.extend(
                self.run_write(db, cmd, &idx, singles, DocOutcome::Deleted, plan)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Runs one batched write command; maps `writeErrors` back to documents.
    /// A command refused as a whole for a non-transient reason, or one whose
    /// reply names any refused statement, is resent one statement at a time:
    /// one bad document cannot block the others, and some servers (FerretDB
    /// v1) stop an unordered command at its first error and misreport the
    /// index. Resending is safe: every statement is idempotent.
    async fn run_write(
        &self,
        db: &Database,
        cmd: RawDocumentBuf,
        idx: &[usize],
        singles: Vec<RawDocumentBuf>,
        ok: DocOutcome,
        plan: &WritePlan,
    ) -> Result<Vec<(usize, DocOutcome)>, TransientFailure> {
        // Held for the whole command (its statements resent one by one too).
        let _permits =
            match &plan.in_flight {
                Some(sem) => {
                    let n = u32::try_from(idx.len().clamp(1, plan.statements.max(1))).unwrap_or(1);
                    Some(sem.acquire_many(n).await.map_err(|_| {
                        TransientFailure::atlas("the write budget was closed".into())
                    })?)
                }
                None => None,
            };
        match db.run_raw_command(cmd).await {
            Ok(reply) => {
                let outcomes = parse_write_reply(&reply, idx, &ok)?;
                let refused = outcomes
                    .iter()
                    .any(|(_, o)| matches!(o, DocOutcome::Rejected { .. }));
                if !refused || idx.len() == 1 {
                    return Ok(outcomes);
                }
                run_singles(db, idx, singles, &ok).await
            }
            Err(e) => match classify_command_error(&e) {
                FailureClass::Transient => Err(TransientFailure::atlas(e.to_string())),
                FailureClass::Isolate if idx.len() == 1 => {
                    Ok(vec![(idx[0], rejected_from_error(&e))])
                }
                FailureClass::Isolate => run_singles(db, idx, singles, &ok).await,
            },
        }
    }
}

/// Sends each statement as its own command and collects every outcome.
async fn run_singles(
    db: &Database,
    idx: &[usize],
    singles: Vec<RawDocumentBuf>,
    ok: &DocOutcome,
) -> Result<Vec<(usize, DocOutcome)>, TransientFailure> {
    let mut out = Vec::with_capacity(idx.len());
    for (&i, single) in idx.iter().zip(singles) {
        match db.run_raw_command(single).await {
            Ok(reply) => out.extend(parse_write_reply(&reply, &[i], ok)?),
            Err(e) if classify_command_error(&e) == FailureClass::Transient => {
                return Err(TransientFailure::atlas(e.to_string()))
            }
            Err(e) => out.push((i, rejected_from_error(&e))),
        }
    }
    Ok(out)
}

fn rejected_from_error(e: &mongodb::error::Error) -> DocOutcome {
    let code = match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    };
    DocOutcome::Rejected {
        code,
        message: e.to_string(),
    }
}

/// Reads `writeErrors` / `writeConcernError` of an update or delete reply.
fn parse_write_reply(
    reply: &bson::Document,
    idx: &[usize],
    ok: &DocOutcome,
) -> Result<Vec<(usize, DocOutcome)>, TransientFailure> {
    if let Ok(wce) = reply.get_document("writeConcernError") {
        // Not acknowledged as durable: resend later (the write is idempotent).
        return Err(TransientFailure::atlas(format!(
            "write concern error: {wce}"
        )));
    }
    let mut outcomes: Vec<(usize, DocOutcome)> = idx.iter().map(|&i| (i, ok.clone())).collect();
    if let Ok(errors) = reply.get_array("writeErrors") {
        for err in errors.iter().filter_map(|e| e.as_document()) {
            let pos = err
                .get("index")
                .and_then(|v| v.as_i32().or_else(|| v.as_i64().map(|n| n as i32)))
                .unwrap_or(-1);
            let code = err.get_i32("code").ok();
            let message = err.get_str("errmsg").unwrap_or("write error").to_owned();
            if code.is_some_and(is_transient_code) {
                return Err(TransientFailure::atlas(message));
            }
            if let Some(slot) = usize::try_from(pos).ok().and_then(|p| outcomes.get_mut(p)) {
                slot.1 = DocOutcome::Rejected { code, message };
            }
        }
    }
    Ok(outcomes)
}

/// Splits items so each group stays under the command size limit and the
/// statement count limit.
fn chunk_by_size<T>(items: &[T], max_count: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let max_count = max_count.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        if i > start && (total + s > MAX_COMMAND_BYTES || i - start >= max_count) {
            out.push(&items[start..i]);
            start = i;
            total = 0;
        }
        total += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// `{q: {_id, ...scope}, u: <doc without _id>, upsert: true}`. The
/// replacement leaves `_id` out: the upsert takes it from `q`, and a server
/// may skip a replacement whose `_id` compares equal but differs in type
/// (FerretDB does). With a scope, an `_id` another installation owns matches
/// nothing, the insert collides (duplicate key) and the document is refused
/// instead of overwriting theirs.
fn upsert_statement(doc: &RawDocumentBuf, scope: Option<&RawDocumentBuf>) -> RawDocumentBuf {
    let mut q = RawDocumentBuf::new();
    let mut u = RawDocumentBuf::new();
    for (key, value) in doc.iter().flatten() {
        if key == "_id" {
            q.append_ref("_id", value);
        } else {
            u.append_ref(key, value);
        }
    }
    crate::scope::append_scope(&mut q, scope);
    rawdoc! { "q": q, "u": u, "upsert": true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn write_errors_map_to_their_documents() {
        let reply = doc! { "ok": 1, "n": 1, "writeErrors": [
            { "index": 1, "code": 11000, "errmsg": "E11000 duplicate key" }
        ]};
        let out = parse_write_reply(&reply, &[7, 9, 11], &DocOutcome::Upserted).unwrap();
        assert_eq!(out[0], (7, DocOutcome::Upserted));
        assert!(matches!(
            &out[1],
            (
                9,
                DocOutcome::Rejected {
                    code: Some(11000),
                    ..
                }
            )
        ));
        assert_eq!(out[2], (11, DocOutcome::Upserted));
    }

    #[test]
    fn transient_write_errors_fail_the_batch() {
        let reply =
            doc! { "ok": 1, "writeErrors": [{ "index": 0, "code": 91, "errmsg": "shutting down" }]};
        assert!(parse_write_reply(&reply, &[0], &DocOutcome::Deleted).is_err());
        let wce = doc! { "ok": 1, "writeConcernError": { "code": 64, "errmsg": "timeout" }};
        assert!(parse_write_reply(&wce, &[0], &DocOutcome::Deleted).is_err());
    }

    #[test]
    fn numeric_ids_match_across_types() {
        use bson::RawBson;
        let a = match_key(RawBson::Int32(7).as_raw_bson_ref());
        let b = match_key(RawBson::Double(7.0).as_raw_bson_ref());
        let c = match_key(RawBson::Int64(7).as_raw_bson_ref());
        let d = match_key(RawBson::String("7".into()).as_raw_bson_ref());
        assert!(a == b && b == c);
        assert_ne!(a, d);
    }

    #[test]
    fn chunks_respect_the_size_limit() {
        let sizes = [3 << 20, 3 << 20, 3 << 20, 1, 9 << 20];
        let chunks = chunk_by_size(&sizes, 100, |s| *s);
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![2, 2, 1]);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), sizes.len());
        let small = [1usize; 10];
        let lens: Vec<usize> = chunk_by_size(&small, 4, |s| *s)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(lens, vec![4, 4, 2]);
    }

    #[test]
    fn replacement_leaves_id_to_the_filter() {
        let doc = rawdoc! { "_id": 7, "a": 1, "b": { "c": true } };
        let stmt = upsert_statement(&doc, None);
        assert_eq!(stmt.get_document("q").unwrap(), &*rawdoc! { "_id": 7 });
        let scoped = upsert_statement(&doc, Some(&rawdoc! { "org": "A" }));
        assert_eq!(
            scoped.get_document("q").unwrap(),
            &*rawdoc! { "_id": 7, "org": "A" }
        );
        assert_eq!(
            stmt.get_document("u").unwrap(),
            &*rawdoc! { "a": 1, "b": { "c": true } }
        );
        assert!(stmt.get_bool("upsert").unwrap());
    }
}
