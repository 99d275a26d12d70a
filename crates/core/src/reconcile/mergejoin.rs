//! The merge-join behind verify and full sync, generic over document streams
//! and point lookups so it runs against in-memory data in tests.
//!
//! Both streams yield documents sorted by `_id`. We walk them in step, compare
//! the raw bytes of documents with equal `_id`s, and classify the rest as
//! missing on Atlas or extra on Atlas. Memory stays O(batch): one current
//! document per side plus a bounded set of unconfirmed candidates.
//!
//! Why point lookups: the merge is only exact if the server sorted both sides
//! the way [`compare_values`] does. A collection with a default collation, or
//! a server that orders some exotic type differently, would otherwise turn one
//! document into a false "missing" plus a false "extra". So each missing/extra
//! candidate is confirmed by reading its `_id` on the other side (batched and
//! run concurrently). The one exception needs no lookup: once the other side
//! is exhausted and neither side has ever been seen out of our order, the
//! ordinary merge argument proves the verdict (the other side cannot hold the
//! `_id` at a position the merge skipped). That covers the common first sync
//! into an empty Atlas, where every document is missing.

use super::order::compare_values;
use bson::{Bson, RawBsonRef, RawDocument, RawDocumentBuf};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use std::cmp::Ordering;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// How one `_id` differs between local and Atlas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Diff {
    /// Local has it, Atlas does not.
    MissingOnAtlas,
    /// Atlas has it, local does not.
    ExtraOnAtlas,
    /// Both have it with different bytes (values, types or field order).
    Different,
}

/// Which database a stream or lookup reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Atlas,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Atlas => "Atlas",
        })
    }
}

/// Result of comparing one collection.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionReport {
    pub collection: String,
    /// Documents read from local.
    pub local_count: u64,
    /// Documents read from Atlas.
    pub atlas_count: u64,
    pub missing_on_atlas: u64,
    pub extra_on_atlas: u64,
    pub different: u64,
    /// Up to `sample_limit` `_id` values of each kind.
    pub samples_missing: Vec<Bson>,
    pub samples_extra: Vec<Bson>,
    pub samples_different: Vec<Bson>,
    /// The scan stopped early on request; counts cover only what was scanned.
    pub cancelled: bool,
    /// The collection's scope (relaxed Extended JSON); `null` = every document.
    pub scope: Option<serde_json::Value>,
    /// "report" or "delete" (empty when the scan ran without a policy).
    pub extras_policy: String,
    /// Extras the `report` policy lists and leaves on Atlas (not repairable
    /// differences: they may belong to another writer).
    pub extras_reported: u64,
    /// Extras this job queued for deletion (full sync under `delete`).
    pub extras_deleted: u64,
}

/// Live counters, shared with whoever reports progress while a scan runs.
/// Scans add to them and never reset them, so one instance can span a job.
#[derive(Debug, Default)]
pub struct ScanProgress {
    /// Distinct `_id`s visited (a matched pair counts once).
    pub scanned: AtomicU64,
    /// Confirmed differences.
    pub differences: AtomicU64,
}

/// A point read by `_id`, used to confirm missing/extra verdicts.
pub trait Lookup: Sync {
    type Error;
    /// Returns the document whose `_id` equals `id`'s `_id` on `side`.
    /// With `with_body == false` only existence matters (a projection is fine).
    fn find(
        &self,
        side: Side,
        id: &RawDocument,
        with_body: bool,
    ) -> impl Future<Output = Result<Option<RawDocumentBuf>, Self::Error>> + Send;
}

/// Why a scan stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ScanError<E> {
    /// Reading a stream or a lookup failed.
    #[error("{0}")]
    Read(E),
    /// A document without a readable `_id` cannot be placed in the merge.
    #[error("a document read from {side} has no readable _id (collection {collection:?})")]
    NoId { side: Side, collection: String },
}

/// Everything a scan needs besides its data sources.
pub struct ScanContext<'a> {
    pub collection: &'a str,
    pub sample_limit: usize,
    pub progress: &'a ScanProgress,
    pub cancel: &'a AtomicBool,
}

/// Candidates are confirmed in groups of this many…
const PENDING_MAX: usize = 256;
/// …with this many lookups in flight.
const LOOKUP_CONCURRENCY: usize = 8;

/// A missing/extra verdict waiting for its point lookup.
struct Candidate {
    diff: Diff,
    id: RawDocumentBuf,
    /// The local document, to compare if Atlas turns out to have it.
    local_body: Option<RawDocumentBuf>,
}

/// One side of the merge: the stream and what has been seen of it.
struct Cursor<S> {
    side: Side,
    stream: S,
    current: Option<RawDocumentBuf>,
    previous: Option<RawDocumentBuf>,
    /// Seen two consecutive `_id`s not strictly increasing in our order.
    out_of_order: bool,
    read: u64,
}

impl<S, E> Cursor<S>
where
    S: Stream<Item = Result<RawDocumentBuf, E>> + Unpin,
{
    fn new(side: Side, stream: S) -> Self {
        Cursor {
            side,
            stream,
            current: None,
            previous: None,
            out_of_order: false,
            read: 0,
        }
    }

    /// Moves `current` to `previous` and reads the next document.
    async fn advance(&mut self, collection: &str) -> Result<(), ScanError<E>> {
        self.previous = self.current.take();
        let Some(next) = self.stream.next().await else {
            return Ok(());
        };
        let next = next.map_err(ScanError::Read)?;
        let id = id_of(&next, self.side, collection)?;
        if let Some(prev) = &self.previous {
            let prev_id = id_of(prev, self.side, collection)?;
            if compare_values(prev_id, id) != Ordering::Less {
                self.out_of_order = true;
            }
        }
        self.read += 1;
        self.current = Some(next);
        Ok(())
    }
}

fn id_of<'a, E>(
    doc: &'a RawDocument,
    side: Side,
    collection: &str,
) -> Result<RawBsonRef<'a>, ScanError<E>> {
    match doc.get("_id") {
        Ok(Some(id)) => Ok(id),
        _ => Err(ScanError::NoId {
            side,
            collection: collection.to_owned(),
        }),
    }
}

fn id_doc(id: RawBsonRef<'_>) -> RawDocumentBuf {
    let mut doc = RawDocumentBuf::new();
    doc.append_ref("_id", id);
    doc
}

/// Records confirmed differences: report, samples, progress, callback.
struct Reporter<'a, F> {
    report: CollectionReport,
    sample_limit: usize,
    progress: &'a ScanProgress,
    on_diff: F,
}

impl<F: FnMut(Diff, &RawDocumentBuf)> Reporter<'_, F> {
    fn emit(&mut self, diff: Diff, id: &RawDocumentBuf) {
        let r = &mut self.report;
        let (count, samples) = match diff {
            Diff::MissingOnAtlas => (&mut r.missing_on_atlas, &mut r.samples_missing),
            Diff::ExtraOnAtlas => (&mut r.extra_on_atlas, &mut r.samples_extra),
            Diff::Different => (&mut r.different, &mut r.samples_different),
        };
        *count += 1;
        if samples.len() < self.sample_limit {
            if let Some(v) = crate::mark::id_value(id) {
                samples.push(v);
            }
        }
        self.progress.differences.fetch_add(1, Relaxed);
        (self.on_diff)(diff, id);
    }
}

/// Runs the merge-join of two `_id`-sorted streams. Calls `on_diff` once per
/// confirmed difference with the `{_id: v}` identity document. Stops early
/// (with `cancelled` set) as soon as `ctx.cancel` is seen set.
pub async fn merge_scan<E, L, A, K, F>(
    ctx: ScanContext<'_>,
    local: L,
    atlas: A,
    lookup: &K,
    on_diff: F,
) -> Result<CollectionReport, ScanError<E>>
where
    L: Stream<Item = Result<RawDocumentBuf, E>> + Unpin,
    A: Stream<Item = Result<RawDocumentBuf, E>> + Unpin,
    K: Lookup<Error = E>,
    F: FnMut(Diff, &RawDocumentBuf),
{
    let coll = ctx.collection;
    let mut reporter = Reporter {
        report: CollectionReport {
            collection: coll.to_owned(),
            ..Default::default()
        },
        sample_limit: ctx.sample_limit,
        progress: ctx.progress,
        on_diff,
    };
    let mut pending: Vec<Candidate> = Vec::new();
    let mut l = Cursor::new(Side::Local, local);
    let mut a = Cursor::new(Side::Atlas, atlas);
    l.advance(coll).await?;
    a.advance(coll).await?;

    loop {
        if ctx.cancel.load(Relaxed) {
            reporter.report.cancelled = true;
            break;
        }
        let order = match (&l.current, &a.current) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(ld), Some(ad)) => {
                compare_values(id_of(ld, Side::Local, coll)?, id_of(ad, Side::Atlas, coll)?)
            }
        };
        let in_order = !l.out_of_order && !a.out_of_order;
        match (order, l.current.as_ref(), a.current.as_ref()) {
            (Ordering::Equal, Some(ld), Some(ad)) => {
                if ld.as_bytes() != ad.as_bytes() {
                    reporter.emit(Diff::Different, &id_doc(id_of(ld, Side::Local, coll)?));
                }
                l.advance(coll).await?;
                a.advance(coll).await?;
            }
            (Ordering::Less, Some(ld), _) => {
                let id = id_doc(id_of(ld, Side::Local, coll)?);
                // Proven missing: Atlas is exhausted and both sides stayed in order.
                if a.current.is_none() && in_order {
                    reporter.emit(Diff::MissingOnAtlas, &id);
                } else {
                    pending.push(Candidate {
                        diff: Diff::MissingOnAtlas,
                        id,
                        local_body: Some(ld.clone()),
                    });
                }
                l.advance(coll).await?;
            }
            (_, _, Some(ad)) => {
                let id = id_doc(id_of(ad, Side::Atlas, coll)?);
                if l.current.is_none() && in_order {
                    reporter.emit(Diff::ExtraOnAtlas, &id);
                } else {
                    pending.push(Candidate {
                        diff: Diff::ExtraOnAtlas,
                        id,
                        local_body: None,
                    });
                }
                a.advance(coll).await?;
            }
            // Unreachable: the order is only Less/Equal with a local document
            // and Greater with an Atlas one.
            _ => break,
        }
        ctx.progress.scanned.fetch_add(1, Relaxed);
        if pending.len() >= PENDING_MAX {
            confirm(&mut pending, lookup, &mut reporter).await?;
        }
    }
    if !reporter.report.cancelled {
        confirm(&mut pending, lookup, &mut reporter).await?;
    }
    reporter.report.local_count = l.read;
    reporter.report.atlas_count = a.read;
    Ok(reporter.report)
}

/// Resolves candidates by point lookups on the other side.
async fn confirm<E, K, F>(
    pending: &mut Vec<Candidate>,
    lookup: &K,
    reporter: &mut Reporter<'_, F>,
) -> Result<(), ScanError<E>>
where
    K: Lookup<Error = E>,
    F: FnMut(Diff, &RawDocumentBuf),
{
    let mut results = futures_util::stream::iter(pending.drain(..))
        .map(|c| async move {
            let found = match c.diff {
                Diff::MissingOnAtlas => lookup.find(Side::Atlas, &c.id, true).await,
                _ => lookup.find(Side::Local, &c.id, false).await,
            };
            (c, found)
        })
        .buffer_unordered(LOOKUP_CONCURRENCY);
    while let Some((c, found)) = results.next().await {
        match (c.diff, found.map_err(ScanError::Read)?, &c.local_body) {
            (diff, None, _) => reporter.emit(diff, &c.id),
            // Atlas has it after all (the server's order differs from ours):
            // compare it here, once, from the local side.
            (Diff::MissingOnAtlas, Some(atlas_doc), Some(local_doc))
                if atlas_doc.as_bytes() != local_doc.as_bytes() =>
            {
                reporter.emit(Diff::Different, &c.id);
            }
            // Equal on Atlas after all; or local has it and the local side of the
            // merge compares it.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;
    use bson::{doc, Document};
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;

    /// Both sides in memory; counts lookups so tests can see when they happen.
    #[derive(Default)]
    struct Mem {
        local: Vec<RawDocumentBuf>,
        atlas: Vec<RawDocumentBuf>,
        lookups: AtomicUsize,
    }

    fn id(doc: &RawDocument) -> RawBsonRef<'_> {
        doc.get("_id").unwrap().unwrap()
    }

    impl Lookup for Mem {
        type Error = String;
        async fn find(
            &self,
            side: Side,
            key: &RawDocument,
            _with_body: bool,
        ) -> Result<Option<RawDocumentBuf>, String> {
            self.lookups.fetch_add(1, Relaxed);
            let docs = match side {
                Side::Local => &self.local,
                Side::Atlas => &self.atlas,
            };
            Ok(docs
                .iter()
                .find(|d| compare_values(id(d), id(key)) == Ordering::Equal)
                .cloned())
        }
    }

    fn stream(
        docs: &[RawDocumentBuf],
    ) -> impl Stream<Item = Result<RawDocumentBuf, String>> + Unpin + '_ {
        futures_util::stream::iter(docs.iter().cloned().map(Ok))
    }

    type Calls = Vec<(Diff, Vec<u8>)>;

    /// Scans `mem`'s sides in the given stream orders; returns report and calls.
    fn run(
        mem: &Mem,
        local_order: &[RawDocumentBuf],
        atlas_order: &[RawDocumentBuf],
        sample_limit: usize,
        progress: &ScanProgress,
    ) -> (CollectionReport, Calls) {
        let cancel = AtomicBool::new(false);
        let mut calls = Vec::new();
        let ctx = ScanContext {
            collection: "c",
            sample_limit,
            progress,
            cancel: &cancel,
        };
        let fut = merge_scan(
            ctx,
            stream(local_order),
            stream(atlas_order),
            mem,
            |d, i| calls.push((d, i.as_bytes().to_vec())),
        );
        let report = futures_executor_block_on(fut).unwrap();
        calls.sort();
        (report, calls)
    }

    fn futures_executor_block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn make(id: &Bson, body: i32) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&doc! { "_id": id.clone(), "v": body }).unwrap()
    }

    fn sorted(mut docs: Vec<RawDocumentBuf>) -> Vec<RawDocumentBuf> {
        docs.sort_by(|a, b| compare_values(id(a), id(b)));
        docs
    }

    /// What the scan must report, computed the slow way.
    fn expected(local: &[RawDocumentBuf], atlas: &[RawDocumentBuf]) -> Calls {
        let find = |docs: &[RawDocumentBuf], d: &RawDocumentBuf| {
            docs.iter()
                .find(|o| compare_values(id(o), id(d)) == Ordering::Equal)
                .cloned()
        };
        let mut out = Vec::new();
        for l in local {
            match find(atlas, l) {
                None => out.push((Diff::MissingOnAtlas, id_doc(id(l)).into_bytes())),
                Some(a) if a.as_bytes() != l.as_bytes() => {
                    out.push((Diff::Different, id_doc(id(l)).into_bytes()))
                }
                Some(_) => {}
            }
        }
        for a in atlas {
            if find(local, a).is_none() {
                out.push((Diff::ExtraOnAtlas, id_doc(id(a)).into_bytes()));
            }
        }
        out.sort();
        out
    }

    /// `_id`s from small pools of several types, so numeric ties across types
    /// (Int32 3 vs Double 3.0) and collisions between the sides are common.
    fn id_value() -> impl Strategy<Value = Bson> {
        prop_oneof![
            (0i32..20).prop_map(Bson::Int32),
            (0i64..20).prop_map(Bson::Int64),
            (0i32..40).prop_map(|h| Bson::Double(f64::from(h) / 2.0)),
            "[a-c]{1,2}".prop_map(Bson::String),
            (0u8..6).prop_map(|b| Bson::ObjectId(ObjectId::from_bytes([b; 12]))),
            (0i32..3).prop_map(|n| Bson::Document(doc! { "k": n })),
        ]
    }

    /// A side: distinct `_id`s (in our order) with small bodies.
    fn side() -> impl Strategy<Value = Vec<RawDocumentBuf>> {
        proptest::collection::vec((id_value(), 0i32..3), 0..40).prop_map(|items| {
            let mut docs: Vec<RawDocumentBuf> = Vec::new();
            for (i, body) in items {
                let d = make(&i, body);
                if !docs
                    .iter()
                    .any(|o| compare_values(id(o), id(&d)) == Ordering::Equal)
                {
                    docs.push(d);
                }
            }
            sorted(docs)
        })
    }

    fn shared_ids() -> impl Strategy<Value = (Vec<RawDocumentBuf>, Vec<RawDocumentBuf>)> {
        // Atlas mostly copies local with some bodies changed, plus its own noise,
        // so matches, differences, misses and extras all occur.
        (side(), side(), proptest::collection::vec(0i32..4, 40)).prop_map(
            |(local, noise, edits)| {
                let mut atlas: Vec<RawDocumentBuf> = Vec::new();
                for (d, e) in local.iter().zip(edits) {
                    match e {
                        0 => {}
                        1 => atlas.push(make(&mark_id(d), 99)),
                        _ => atlas.push(d.clone()),
                    }
                }
                for d in noise {
                    if !atlas
                        .iter()
                        .any(|o| compare_values(id(o), id(&d)) == Ordering::Equal)
                    {
                        atlas.push(d);
                    }
                }
                (local, sorted(atlas))
            },
        )
    }

    fn mark_id(d: &RawDocumentBuf) -> Bson {
        crate::mark::id_value(&id_doc(id(d))).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn reports_exactly_the_set_and_body_differences((local, atlas) in shared_ids()) {
            let mem = Mem { local: local.clone(), atlas: atlas.clone(), ..Default::default() };
            let progress = ScanProgress::default();
            let (report, calls) = run(&mem, &local, &atlas, 5, &progress);
            let want = expected(&local, &atlas);
            prop_assert_eq!(&calls, &want);
            let count = |k| want.iter().filter(|(d, _)| *d == k).count() as u64;
            prop_assert_eq!(report.missing_on_atlas, count(Diff::MissingOnAtlas));
            prop_assert_eq!(report.extra_on_atlas, count(Diff::ExtraOnAtlas));
            prop_assert_eq!(report.different, count(Diff::Different));
            prop_assert_eq!(report.local_count, local.len() as u64);
            prop_assert_eq!(report.atlas_count, atlas.len() as u64);
            prop_assert!(report.samples_missing.len() as u64 == report.missing_on_atlas.min(5));
            prop_assert!(report.samples_extra.len() as u64 == report.extra_on_atlas.min(5));
            prop_assert!(report.samples_different.len() as u64 == report.different.min(5));
            prop_assert_eq!(progress.differences.load(Relaxed), want.len() as u64);
            // Each distinct _id is visited once: |local ∪ atlas|.
            let union = local.len() as u64 + atlas.len() as u64
                - (local.len() as u64 - count(Diff::MissingOnAtlas));
            prop_assert_eq!(progress.scanned.load(Relaxed), union);
        }

        /// If the servers sort differently from us, lookups keep the result exact.
        #[test]
        fn stays_exact_when_streams_are_out_of_our_order(
            (local, atlas, local_order, atlas_order) in shared_ids().prop_flat_map(|(l, a)| {
                let (lo, ao) = (Just(l.clone()).prop_shuffle(), Just(a.clone()).prop_shuffle());
                (Just(l), Just(a), lo, ao)
            })
        ) {
            let mem = Mem { local: local.clone(), atlas: atlas.clone(), ..Default::default() };
            let (_, calls) = run(&mem, &local_order, &atlas_order, 5, &ScanProgress::default());
            prop_assert_eq!(calls, expected(&local, &atlas));
        }
    }

    fn ints(ids: &[i32], body: i32) -> Vec<RawDocumentBuf> {
        ids.iter().map(|i| make(&Bson::Int32(*i), body)).collect()
    }

    #[test]
    fn identical_sides_need_no_lookups() {
        let docs = ints(&(0..500).collect::<Vec<_>>(), 1);
        let mem = Mem {
            local: docs.clone(),
            atlas: docs.clone(),
            ..Default::default()
        };
        let (report, calls) = run(&mem, &docs, &docs, 5, &ScanProgress::default());
        assert!(calls.is_empty());
        assert_eq!((report.local_count, report.atlas_count), (500, 500));
        assert_eq!(mem.lookups.load(Relaxed), 0);
    }

    #[test]
    fn an_exhausted_side_proves_the_rest_without_lookups() {
        let local = ints(&(0..300).collect::<Vec<_>>(), 1);
        let mem = Mem {
            local: local.clone(),
            ..Default::default()
        };
        let (report, _) = run(&mem, &local, &[], 5, &ScanProgress::default());
        assert_eq!(report.missing_on_atlas, 300);
        assert_eq!(report.samples_missing.len(), 5);
        assert_eq!(mem.lookups.load(Relaxed), 0);

        // Interleaved gaps are confirmed by lookups (one per candidate).
        let (l, a) = (ints(&[1, 3, 5], 0), ints(&[2, 3, 4, 6], 0));
        let mem = Mem {
            local: l.clone(),
            atlas: a.clone(),
            ..Default::default()
        };
        let (report, _) = run(&mem, &l, &a, 5, &ScanProgress::default());
        assert_eq!((report.missing_on_atlas, report.extra_on_atlas), (2, 3));
        // 1 and 5 (missing, Atlas not yet exhausted); 2, 4 (extra); 6 proven.
        assert_eq!(mem.lookups.load(Relaxed), 4);
    }

    #[test]
    fn field_order_and_numeric_type_count_as_different() {
        let l = vec![
            RawDocumentBuf::from_document(&doc! {"_id": 1, "a": 1, "b": 2}).unwrap(),
            RawDocumentBuf::from_document(&doc! {"_id": 2, "a": 1}).unwrap(),
        ];
        let a = vec![
            RawDocumentBuf::from_document(&doc! {"_id": 1, "b": 2, "a": 1}).unwrap(),
            RawDocumentBuf::from_document(&doc! {"_id": 2, "a": 1i64}).unwrap(),
        ];
        let mem = Mem {
            local: l.clone(),
            atlas: a.clone(),
            ..Default::default()
        };
        let (report, calls) = run(&mem, &l, &a, 5, &ScanProgress::default());
        assert_eq!(report.different, 2);
        assert_eq!(
            report.samples_different,
            vec![Bson::Int32(1), Bson::Int32(2)]
        );
        assert_eq!(calls.len(), 2);
    }

    #[test]
    fn cancel_stops_at_the_next_document() {
        let local = ints(&(0..100).collect::<Vec<_>>(), 1);
        let mem = Mem {
            local: local.clone(),
            ..Default::default()
        };
        let cancel = AtomicBool::new(false);
        let progress = ScanProgress::default();
        let ctx = ScanContext {
            collection: "c",
            sample_limit: 3,
            progress: &progress,
            cancel: &cancel,
        };
        let report = futures_executor_block_on(merge_scan(
            ctx,
            stream(&local),
            stream(&[]),
            &mem,
            |_, _| cancel.store(true, Relaxed),
        ))
        .unwrap();
        assert!(report.cancelled);
        assert_eq!(report.missing_on_atlas, 1);
        assert_eq!(progress.scanned.load(Relaxed), 1);
    }

    #[test]
    fn errors_name_their_cause() {
        let no_id = vec![RawDocumentBuf::from_document(&doc! {"x": 1}).unwrap()];
        let mem = Mem::default();
        let cancel = AtomicBool::new(false);
        let progress = ScanProgress::default();
        let ctx = || ScanContext {
            collection: "bills",
            sample_limit: 3,
            progress: &progress,
            cancel: &cancel,
        };
        let err = futures_executor_block_on(merge_scan(
            ctx(),
            stream(&[]),
            stream(&no_id),
            &mem,
            |_, _| {},
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a document read from Atlas has no readable _id (collection \"bills\")"
        );

        let failing = futures_util::stream::iter(vec![Err::<RawDocumentBuf, _>(
            "connection reset".to_string(),
        )]);
        let err =
            futures_executor_block_on(merge_scan(ctx(), failing, stream(&[]), &mem, |_, _| {}))
                .unwrap_err();
        assert!(matches!(err, ScanError::Read(ref m) if m == "connection reset"));
    }

    #[test]
    fn samples_are_id_values() {
        let l = vec![RawDocumentBuf::from_document(&doc! {"_id": "k1", "v": 1}).unwrap()];
        let mem = Mem {
            local: l.clone(),
            ..Default::default()
        };
        let (report, calls) = run(&mem, &l, &[], 5, &ScanProgress::default());
        assert_eq!(report.samples_missing, vec![Bson::String("k1".into())]);
        let want: Document = doc! {"_id": "k1"};
        assert_eq!(
            calls[0].1,
            RawDocumentBuf::from_document(&want).unwrap().into_bytes()
        );
    }
}
