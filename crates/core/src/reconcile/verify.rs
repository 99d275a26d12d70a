//! Scanning real collections: sorted cursors on both servers feed the generic
//! merge-join, and point lookups are `find_one({_id})`.

use super::mergejoin::{
    merge_scan, CollectionReport, Diff, Lookup, ScanContext, ScanError, ScanProgress, Side,
};
use crate::scope::{filter_json, scoped_id};
use bson::{doc, RawDocument, RawDocumentBuf};
use futures_util::{Stream, StreamExt, TryStreamExt};
use mongodb::action::Find;
use mongodb::{Collection, Cursor, Database};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;

/// Prefix of the collections dualsync itself keeps in the local database.
pub const OWN_PREFIX: &str = "dualsync_";

/// Knobs of one collection scan.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Cursor batch size; 0 leaves it to the server.
    pub batch_size: u32,
    /// Most `_id`s kept per kind of difference in the report.
    pub sample_limit: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            batch_size: 1000,
            sample_limit: 20,
        }
    }
}

struct Pair<'a> {
    local: &'a Collection<RawDocumentBuf>,
    atlas: &'a Collection<RawDocumentBuf>,
    scope: Option<&'a RawDocumentBuf>,
}

impl Lookup for Pair<'_> {
    type Error = mongodb::error::Error;

    async fn find(
        &self,
        side: Side,
        id: &RawDocument,
        with_body: bool,
    ) -> Result<Option<RawDocumentBuf>, Self::Error> {
        let coll = match side {
            Side::Local => self.local,
            Side::Atlas => self.atlas,
        };
        // `{_id: v}` exactly without a scope: the form FerretDB pushes down
        // to its storage. With one, a document outside it counts as absent.
        let filter = bson::Document::try_from(scoped_id(id, self.scope).as_ref())?;
        let find = coll.find_one(filter);
        if with_body {
            find.await
        } else {
            find.projection(doc! { "_id": 1 }).await
        }
    }
}

/// Compares one collection between local and Atlas, only the documents in
/// `scope` on either side (the servers apply the filter, so nothing outside
/// it is read). `on_diff` receives each confirmed difference with its
/// `{_id: v}` document; nothing is written.
pub async fn scan_collection(
    local: &Collection<RawDocumentBuf>,
    atlas: &Collection<RawDocumentBuf>,
    scope: Option<&RawDocumentBuf>,
    opts: &ScanOptions,
    progress: &ScanProgress,
    cancel: &AtomicBool,
    on_diff: impl FnMut(Diff, &RawDocumentBuf),
) -> Result<CollectionReport, mongodb::error::Error> {
    fn open<'a>(
        coll: &'a Collection<RawDocumentBuf>,
        filter: bson::Document,
        batch_size: u32,
    ) -> Find<'a, RawDocumentBuf> {
        let find = coll.find(filter).sort(doc! { "_id": 1 });
        if batch_size > 0 {
            find.batch_size(batch_size)
        } else {
            find
        }
    }
    let depth = match opts.batch_size {
        0 => 1000,
        n => n.min(10_000) as usize,
    };
    let filter = match scope {
        Some(s) => bson::Document::try_from(s.as_ref())?,
        None => doc! {},
    };
    let local_cursor = prefetch(open(local, filter.clone(), opts.batch_size).await?, depth);
    let atlas_cursor = prefetch(open(atlas, filter, opts.batch_size).await?, depth);
    let ctx = ScanContext {
        collection: local.name(),
        sample_limit: opts.sample_limit,
        progress,
        cancel,
    };
    merge_scan(
        ctx,
        local_cursor,
        atlas_cursor,
        &Pair {
            local,
            atlas,
            scope,
        },
        on_diff,
    )
    .await
    .map(|mut report| {
        report.scope = scope.map(|s| filter_json(s));
        report
    })
    .map_err(|e| match e {
        ScanError::Read(e) => e,
        other => mongodb::error::Error::custom(other.to_string()),
    })
}

/// Reads a cursor in its own task, up to `depth` documents ahead. The merge
/// alternates between the sides and the driver only asks for the next batch
/// once the current one is used up, so without this each server would sit
/// idle while the other answers its getMore. With it both fetch at once,
/// which pays when the sides are different machines (local disk vs Atlas
/// over the network). On the 2-core test bed both FerretDBs are CPU-bound
/// and the gain was within noise. Dropping the stream ends the task, which
/// drops (and so kills) the cursor.
fn prefetch(
    mut cursor: Cursor<RawDocumentBuf>,
    depth: usize,
) -> Pin<Box<dyn Stream<Item = mongodb::error::Result<RawDocumentBuf>> + Send>> {
    let (tx, rx) = tokio::sync::mpsc::channel(depth);
    tokio::spawn(async move {
        while let Some(item) = cursor.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// The local collections a full sync covers, sorted: everything except views,
/// `system.*`, the `excluded` names and dualsync's own (`own_prefix`).
pub async fn list_sync_collections(
    local_db: &Database,
    excluded: &[String],
    own_prefix: &str,
) -> Result<Vec<String>, mongodb::error::Error> {
    let specs: Vec<_> = local_db.list_collections().await?.try_collect().await?;
    let mut names: Vec<String> = specs
        .into_iter()
        .filter(|s| s.collection_type == mongodb::results::CollectionType::Collection)
        .map(|s| s.name)
        .filter(|n| {
            !n.starts_with("system.")
                && !n.starts_with(own_prefix)
                && !excluded.iter().any(|e| e == n)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The server's cheap metadata count; 0 when it cannot be had (it only feeds
/// progress estimates).
pub async fn estimated_count<T: Send + Sync>(coll: &Collection<T>) -> u64 {
    coll.estimated_document_count().await.unwrap_or(0)
}
