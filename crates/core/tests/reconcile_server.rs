//! Reconciler against two real servers (FerretDB or mongod) named by
//! DUALSYNC_TEST_LOCAL_URI and DUALSYNC_TEST_ATLAS_URI. Differences are made
//! with the plain driver; the scan must report exactly them.

use bson::oid::ObjectId;
use bson::{doc, Bson, Document, RawDocumentBuf};
use dualsync_core::reconcile::{
    list_sync_collections, scan_collection, spawn_job, Diff, JobOptions, JobSnapshot, RepairFn,
    ScanOptions, ScanProgress, OWN_PREFIX,
};
use dualsync_core::scope::ScopeRules;
use mongodb::{Client, Collection, Database};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn uri(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: point it at a running MongoDB-compatible server (the test script starts two FerretDB instances and sets DUALSYNC_TEST_LOCAL_URI and DUALSYNC_TEST_ATLAS_URI); this test never skips")
    })
}

/// A fresh database with the same random name on both servers.
struct Pair {
    local: Database,
    atlas: Database,
}

impl Pair {
    async fn new() -> Pair {
        let name = format!("recon_{:012x}", rand::random::<u64>() >> 16);
        let local = Client::with_uri_str(uri("DUALSYNC_TEST_LOCAL_URI"))
            .await
            .unwrap();
        let atlas = Client::with_uri_str(uri("DUALSYNC_TEST_ATLAS_URI"))
            .await
            .unwrap();
        Pair {
            local: local.database(&name),
            atlas: atlas.database(&name),
        }
    }

    fn colls(&self, name: &str) -> (Collection<Document>, Collection<Document>) {
        (self.local.collection(name), self.atlas.collection(name))
    }

    fn raw(&self, name: &str) -> (Collection<RawDocumentBuf>, Collection<RawDocumentBuf>) {
        (self.local.collection(name), self.atlas.collection(name))
    }

    async fn seed_both(&self, name: &str, docs: Vec<Document>) {
        let (l, a) = self.colls(name);
        for chunk in docs.chunks(1000) {
            l.insert_many(chunk.to_vec()).await.unwrap();
            a.insert_many(chunk.to_vec()).await.unwrap();
        }
    }

    async fn drop(self) {
        let _ = self.local.drop().await;
        let _ = self.atlas.drop().await;
    }
}

type Found = BTreeSet<(String, String)>;

fn key(diff: Diff, id: &Bson) -> (String, String) {
    (format!("{diff:?}"), format!("{id:?}"))
}

/// Scans one collection, returning the report and the (diff, _id) calls.
async fn scan(
    pair: &Pair,
    name: &str,
    batch_size: u32,
) -> (dualsync_core::reconcile::CollectionReport, Found) {
    scan_scoped(pair, name, batch_size, None).await
}

/// `scan` with a scope filter applied on both sides.
async fn scan_scoped(
    pair: &Pair,
    name: &str,
    batch_size: u32,
    scope: Option<&RawDocumentBuf>,
) -> (dualsync_core::reconcile::CollectionReport, Found) {
    let (l, a) = pair.raw(name);
    let mut found = Found::new();
    let report = scan_collection(
        &l,
        &a,
        scope,
        &ScanOptions {
            batch_size,
            sample_limit: 100,
        },
        &ScanProgress::default(),
        &AtomicBool::new(false),
        |diff, id| {
            let v = dualsync_core::mark::id_value(id).expect("identity doc has an _id");
            assert!(
                found.insert(key(diff, &v)),
                "reported twice: {diff:?} {v:?}"
            );
        },
    )
    .await
    .unwrap();
    (report, found)
}

#[tokio::test]
async fn reports_each_kind_of_difference_exactly() {
    let pair = Pair::new().await;
    // Mixed _id types so the merge crosses type brackets as the server sorts them.
    let mut ids: Vec<Bson> = (0..150).map(|_| Bson::ObjectId(ObjectId::new())).collect();
    ids.extend((0..30).map(|i| Bson::String(format!("s{i:03}"))));
    ids.extend((0..20).map(Bson::Int32));
    let base: Vec<Document> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            doc! {
                "_id": id.clone(), "n": i as i32, "name": format!("item {i}"),
                "addr": { "city": "Lyon", "zip": "69001" }, "tags": ["a", "b"],
            }
        })
        .collect();
    pair.seed_both("items", base.clone()).await;
    let (l, a) = pair.colls("items");
    let mut want = Found::new();
    let id = |i: usize| ids[i].clone();

    // Missing on Atlas: deleted there, and inserted only locally.
    for i in [3, 155, 190] {
        a.delete_one(doc! {"_id": id(i)}).await.unwrap();
        want.insert(key(Diff::MissingOnAtlas, &id(i)));
    }
    let local_only = Bson::String("zz-new".into());
    l.insert_one(doc! {"_id": local_only.clone(), "n": 1})
        .await
        .unwrap();
    want.insert(key(Diff::MissingOnAtlas, &local_only));

    // Extra on Atlas: inserted only there, and deleted locally.
    let atlas_only = Bson::ObjectId(ObjectId::new());
    a.insert_one(doc! {"_id": atlas_only.clone(), "n": 2})
        .await
        .unwrap();
    want.insert(key(Diff::ExtraOnAtlas, &atlas_only));
    a.insert_one(doc! {"_id": 1000, "n": 3}).await.unwrap();
    want.insert(key(Diff::ExtraOnAtlas, &Bson::Int32(1000)));
    l.delete_one(doc! {"_id": id(40)}).await.unwrap();
    want.insert(key(Diff::ExtraOnAtlas, &id(40)));

    // Different: a value changed on either side.
    a.update_one(doc! {"_id": id(10)}, doc! {"$set": {"name": "changed"}})
        .await
        .unwrap();
    l.update_one(doc! {"_id": id(160)}, doc! {"$set": {"n": 999}})
        .await
        .unwrap();
    // Same value, another type (Int32 5 vs Int64 5 are equal to a query).
    a.update_one(doc! {"_id": id(11)}, doc! {"$set": {"n": 11i64}})
        .await
        .unwrap();
    // Same fields in another order.
    let mut reordered = base[12].clone();
    let n = reordered.remove("n").unwrap();
    reordered.insert("n", n);
    a.replace_one(doc! {"_id": id(12)}, reordered)
        .await
        .unwrap();
    // A nested change.
    a.update_one(doc! {"_id": id(185)}, doc! {"$set": {"addr.zip": "69002"}})
        .await
        .unwrap();
    // A field added locally.
    l.update_one(doc! {"_id": id(13)}, doc! {"$set": {"extra": true}})
        .await
        .unwrap();
    for i in [10, 160, 11, 12, 185, 13] {
        want.insert(key(Diff::Different, &id(i)));
    }

    // Small batches so the merge spans many getMores.
    let (report, found) = scan(&pair, "items", 7).await;
    assert_eq!(found, want);
    assert_eq!(
        (
            report.missing_on_atlas,
            report.extra_on_atlas,
            report.different
        ),
        (4, 3, 6),
        "{report:?}"
    );
    assert_eq!(report.local_count, 200 - 1 + 1);
    assert_eq!(report.atlas_count, 200 - 3 + 2);
    assert!(!report.cancelled);
    let mut samples: Vec<String> = report
        .samples_different
        .iter()
        .map(|v| format!("{v:?}"))
        .collect();
    samples.sort();
    let mut want_samples: Vec<String> = [10, 160, 11, 12, 185, 13]
        .iter()
        .map(|i| format!("{:?}", id(*i)))
        .collect();
    want_samples.sort();
    assert_eq!(samples, want_samples);
    pair.drop().await;
}

#[tokio::test]
async fn identical_20k_collection_verifies_clean() {
    let pair = Pair::new().await;
    let docs: Vec<Document> = (0..20_000)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(), "seq": i, "name": format!("customer {i}"),
                "total": f64::from(i) * 1.25, "paid": i % 3 == 0,
                "lines": [{"sku": format!("SKU{}", i % 97), "qty": i % 5 + 1}],
                "at": bson::DateTime::from_millis(1_700_000_000_000 + i64::from(i)),
            }
        })
        .collect();
    pair.seed_both("orders", docs).await;
    let started = Instant::now();
    let (report, found) = scan(&pair, "orders", 1000).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!((report.local_count, report.atlas_count), (20_000, 20_000));
    assert_eq!(
        report.missing_on_atlas + report.extra_on_atlas + report.different,
        0
    );
    eprintln!(
        "verify of 20000 identical documents: {secs:.2}s, {:.0} docs/s",
        20_000.0 / secs
    );
    pair.drop().await;
}

/// Seeds: "a" with one document missing on Atlas, "b" identical, and two
/// collections the job must leave alone (excluded, and dualsync's own).
async fn seed_job_fixture(pair: &Pair) -> Bson {
    let missing = Bson::ObjectId(ObjectId::new());
    pair.seed_both(
        "a",
        (0..50)
            .map(|i| doc! {"_id": ObjectId::new(), "i": i})
            .collect(),
    )
    .await;
    pair.local
        .collection("a")
        .insert_one(doc! {"_id": missing.clone()})
        .await
        .unwrap();
    pair.seed_both("b", (0..30).map(|i| doc! {"_id": i, "i": i}).collect())
        .await;
    for name in ["skipme", &format!("{OWN_PREFIX}journal")] {
        pair.local
            .collection(name)
            .insert_one(doc! {"x": 1})
            .await
            .unwrap();
    }
    missing
}

type Repairs = Arc<Mutex<Vec<(String, Bson)>>>;

fn recorder() -> (Repairs, RepairFn) {
    let seen: Repairs = Arc::default();
    let s = seen.clone();
    let f = move |coll: &str, id: &RawDocumentBuf| {
        let v = dualsync_core::mark::id_value(id).unwrap();
        s.lock().unwrap().push((coll.to_owned(), v));
    };
    (seen, Arc::new(f))
}

fn opts(dry_run: bool, collections: Option<Vec<String>>) -> JobOptions {
    JobOptions {
        collections,
        dry_run,
        batch_size: 100,
        sample_limit: 10,
    }
}

/// Runs a job over the pair (no scope) to its end; its repairs go to `repair`.
async fn run_job(
    pair: &Pair,
    excluded: &[String],
    options: JobOptions,
    repair: RepairFn,
) -> JobSnapshot {
    let rt = tokio::runtime::Handle::current();
    spawn_job(
        &rt,
        pair.local.clone(),
        pair.atlas.clone(),
        excluded.to_vec(),
        Arc::new(ScopeRules::default()),
        options,
        repair,
    )
    .wait()
    .await
}

#[tokio::test]
async fn jobs_verify_or_repair_the_synced_collections() {
    let pair = Pair::new().await;
    let missing = seed_job_fixture(&pair).await;
    let excluded = vec!["skipme".to_string()];
    assert_eq!(
        list_sync_collections(&pair.local, &excluded, OWN_PREFIX)
            .await
            .unwrap(),
        vec!["a", "b"]
    );

    // Verify: reports, repairs nothing.
    let (seen, repair) = recorder();
    let snap = run_job(&pair, &excluded, opts(true, None), repair).await;
    assert_eq!(
        (snap.kind.as_str(), snap.state.as_str()),
        ("verify", "done"),
        "{snap:?}"
    );
    assert_eq!((snap.collections_total, snap.collections_done), (2, 2));
    assert_eq!((snap.differences, snap.repairs_queued), (1, 0));
    assert_eq!(snap.docs_scanned, 51 + 30);
    // Per collection, the larger side's metadata count: 51 (local a) + 30.
    assert_eq!(snap.docs_estimated, 81);
    assert!(snap.finished_at.is_some() && snap.error.is_none() && snap.eta_ms.is_none());
    assert!(seen.lock().unwrap().is_empty());
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["reports"][0]["collection"], "a");
    assert_eq!(json["reports"][0]["missingOnAtlas"], 1);
    assert_eq!(json["reports"][1]["localCount"], 30);
    assert_eq!(json["docsScanned"], 81);

    // Full sync: the same difference goes to `repair`, once.
    let (seen, repair) = recorder();
    let snap = run_job(&pair, &excluded, opts(false, None), repair).await;
    assert_eq!(
        (snap.kind.as_str(), snap.state.as_str()),
        ("fullSync", "done"),
        "{snap:?}"
    );
    assert_eq!(snap.repairs_queued, 1);
    assert_eq!(*seen.lock().unwrap(), vec![("a".to_string(), missing)]);

    // An explicit list limits the job; unknown or excluded names fail it.
    let (_, repair) = recorder();
    let only_b = opts(true, Some(vec!["b".into()]));
    let snap = run_job(&pair, &excluded, only_b, repair.clone()).await;
    assert_eq!(
        (snap.state.as_str(), snap.reports.len(), snap.differences),
        ("done", 1, 0)
    );
    let bad = opts(true, Some(vec!["b".into(), "skipme".into(), "nope".into()]));
    let snap = run_job(&pair, &excluded, bad, repair).await;
    assert_eq!(snap.state, "failed");
    let err = snap.error.unwrap();
    assert!(
        err.contains("\"skipme\"") && err.contains("\"nope\"") && !err.contains("\"b\""),
        "{err}"
    );
    pair.drop().await;
}

#[test]
fn a_cancelled_job_stops_before_scanning() {
    // A current-thread runtime runs spawned tasks only inside block_on, so the
    // cancel below lands before the job's first step, every time.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pair = rt.block_on(async {
        let pair = Pair::new().await;
        seed_job_fixture(&pair).await;
        pair
    });
    let (seen, repair) = recorder();
    let job = spawn_job(
        rt.handle(),
        pair.local.clone(),
        pair.atlas.clone(),
        vec![],
        Arc::new(ScopeRules::default()),
        opts(false, None),
        repair,
    );
    job.cancel();
    let snap = rt.block_on(job.wait());
    assert_eq!(snap.state, "cancelled", "{snap:?}");
    assert!(snap.reports.is_empty() && seen.lock().unwrap().is_empty());
    assert_eq!(snap.docs_scanned, 0);
    rt.block_on(pair.drop());
}

#[tokio::test]
async fn a_scoped_scan_reads_compares_and_reports_only_the_scope() {
    let pair = Pair::new().await;
    let (a_org, b_org) = (ObjectId::new(), ObjectId::new());
    let docs: Vec<Document> = (0..40)
        .map(|i| {
            let org = if i % 2 == 0 { a_org } else { b_org };
            doc! { "_id": i, "organization": org, "total": i * 10 }
        })
        .collect();
    pair.seed_both("bills", docs).await;
    let (l, a) = pair.colls("bills");
    // Out of scope (B): a B-only doc on Atlas, a B doc changed on Atlas, a B doc
    // deleted locally. None of it may show up in A's scan.
    a.insert_one(doc! { "_id": 100, "organization": b_org })
        .await
        .unwrap();
    a.update_one(doc! { "_id": 1 }, doc! { "$set": { "total": -1 } })
        .await
        .unwrap();
    l.delete_one(doc! { "_id": 3 }).await.unwrap();
    // In scope (A): one of each kind.
    let mut want = Found::new();
    a.insert_one(doc! { "_id": 200, "organization": a_org })
        .await
        .unwrap();
    want.insert(key(Diff::ExtraOnAtlas, &Bson::Int32(200)));
    a.update_one(doc! { "_id": 2 }, doc! { "$set": { "total": -1 } })
        .await
        .unwrap();
    want.insert(key(Diff::Different, &Bson::Int32(2)));
    a.delete_one(doc! { "_id": 4 }).await.unwrap();
    want.insert(key(Diff::MissingOnAtlas, &Bson::Int32(4)));
    // The same _id in both scopes: A's copy locally, B's on Atlas. Within A's
    // scope it is missing on Atlas (B's document is not A's to compare).
    l.insert_one(doc! { "_id": 300, "organization": a_org })
        .await
        .unwrap();
    a.insert_one(doc! { "_id": 300, "organization": b_org })
        .await
        .unwrap();
    want.insert(key(Diff::MissingOnAtlas, &Bson::Int32(300)));

    let scope = bson::rawdoc! { "organization": a_org };
    for batch in [0, 7] {
        let (report, found) = scan_scoped(&pair, "bills", batch, Some(&scope)).await;
        assert_eq!(found, want, "batch size {batch}");
        // A's 20 seeded + 300 locally; on Atlas 20 - _id 4 + _id 200 (B's 300 is not counted).
        assert_eq!(
            (report.local_count, report.atlas_count),
            (21, 20),
            "{report:?}"
        );
        assert_eq!(
            report.scope.as_ref().unwrap()["organization"]["$oid"],
            a_org.to_hex()
        );
    }
    // Unscoped, B's changes count too.
    let (_, all) = scan(&pair, "bills", 0).await;
    assert!(all.len() > want.len(), "{all:?}");
    pair.drop().await;
}
