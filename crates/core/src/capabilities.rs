//! What a server can do, learned from its own answers — never from its name.
//!
//! The drain has a fast path (one `$in` read per namespace, write commands as
//! large as the server accepts) and a careful path for servers whose storage
//! does not evaluate the filter itself (FerretDB v1 on SQLite today): there a
//! `$in` on `_id` scans the whole table, and every statement of a write
//! command is its own storage query holding a pooled connection until the
//! command ends. Both facts are read from the server's `explain` answer.

use bson::{Bson, Document};

/// How local documents are read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// One `find({_id: {$in: [...]}})` per namespace (the server answers it from the `_id` index).
    In,
    /// One `find({_id: v})` per document, concurrently: the server would scan for a `$in`.
    Point,
}

/// Statements per write command where each statement is a separate storage
/// query holding a connection (FerretDB v1 keeps 100 per database): lanes ×
/// statements must stay well under that, or the command deadlocks.
pub const UNPUSHED_STATEMENTS_PER_COMMAND: usize = 16;

/// Statements in flight at once over all write commands on such a server:
/// with batches pipelined, lanes × batches in flight × statements could
/// otherwise pass its 100 connections.
pub const UNPUSHED_STATEMENTS_IN_FLIGHT: usize = 64;

/// Statements all write commands together may have in flight on a server
/// (`None`: no bound but the pipeline's own).
pub fn statements_in_flight(evidence: FilterEvidence) -> Option<usize> {
    match evidence {
        FilterEvidence::Scans => Some(UNPUSHED_STATEMENTS_IN_FLIGHT),
        FilterEvidence::Indexed | FilterEvidence::Unknown => None,
    }
}

/// The server's own statement limit when its `hello` does not say (MongoDB's value).
const DEFAULT_MAX_WRITE_BATCH: usize = 100_000;

/// What an `explain` of a `_id` `$in` find says about how the server runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterEvidence {
    /// The plan reads through an index (or the server's storage evaluates the filter).
    Indexed,
    /// The server says it evaluates the filter itself over a scan (`filterPushdown: false`,
    /// or a `COLLSCAN` stage).
    Scans,
    /// The answer says neither; the fast path is assumed.
    Unknown,
}

/// The `explain` command that shows how a `_id` `$in` find on `coll` would run.
pub fn in_probe_command(coll: &str) -> Document {
    bson::doc! {
        "explain": { "find": coll, "filter": { "_id": { "$in": [0_i32, 1_i32] } } },
        "verbosity": "queryPlanner",
    }
}

/// Reads an `explain` answer (see `in_probe_command`).
pub fn filter_evidence(explain: &Document) -> FilterEvidence {
    if let Ok(false) = explain.get_bool("filterPushdown") {
        return FilterEvidence::Scans;
    }
    let mut stages = Vec::new();
    collect_stages(&Bson::Document(explain.clone()), &mut stages, 0);
    if stages.iter().any(|s| s == "COLLSCAN") {
        FilterEvidence::Scans
    } else if stages
        .iter()
        .any(|s| s.contains("IXSCAN") || s == "IDHACK" || s == "EOF")
    {
        FilterEvidence::Indexed
    } else {
        FilterEvidence::Unknown
    }
}

fn collect_stages(v: &Bson, out: &mut Vec<String>, depth: usize) {
    // Plans nest a few levels (inputStage, inputStages, shards); bound the walk.
    if depth > 32 {
        return;
    }
    match v {
        Bson::Document(d) => {
            for (k, v) in d {
                if k == "stage" {
                    if let Bson::String(s) = v {
                        out.push(s.clone());
                    }
                }
                collect_stages(v, out, depth + 1);
            }
        }
        Bson::Array(a) => a.iter().for_each(|v| collect_stages(v, out, depth + 1)),
        _ => {}
    }
}

/// How to read local documents, given the local server's evidence.
pub fn read_mode(evidence: FilterEvidence) -> ReadMode {
    match evidence {
        FilterEvidence::Scans => ReadMode::Point,
        FilterEvidence::Indexed | FilterEvidence::Unknown => ReadMode::In,
    }
}

/// Statements per write command, given Atlas's `hello` and evidence.
pub fn statements_per_command(hello: &Document, evidence: FilterEvidence) -> usize {
    let server_max = match hello.get("maxWriteBatchSize") {
        Some(Bson::Int32(n)) if *n > 0 => *n as usize,
        Some(Bson::Int64(n)) if *n > 0 => usize::try_from(*n).unwrap_or(DEFAULT_MAX_WRITE_BATCH),
        Some(Bson::Double(n)) if *n >= 1.0 => *n as usize,
        _ => DEFAULT_MAX_WRITE_BATCH,
    };
    match evidence {
        FilterEvidence::Scans => server_max.min(UNPUSHED_STATEMENTS_PER_COMMAND),
        FilterEvidence::Indexed | FilterEvidence::Unknown => server_max,
    }
}

/// Asks `db` how it would run a `_id` `$in` on `coll`. A server that refuses
/// `explain` gives no evidence (the fast path); a network failure is an error,
/// so that it is not remembered as the server's answer.
pub async fn probe_filter(db: &mongodb::Database, coll: &str) -> Result<FilterEvidence, String> {
    match db.run_command(in_probe_command(coll)).await {
        Ok(answer) => Ok(filter_evidence(&answer)),
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(_)) => {
            Ok(FilterEvidence::Unknown)
        }
        Err(e) => Err(format!("explain on {}.{coll} failed: {e}", db.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn server_that_says_it_does_not_push_the_filter_scans() {
        // Shape of FerretDB v1's answer: a SQLite plan plus pushdown flags.
        let answer = doc! {
            "queryPlanner": { "Plan": ["id=2 parent=0 notused=0 detail=SCAN c_e60c2c52"] },
            "filterPushdown": false, "sortPushdown": false, "ok": 1,
        };
        assert_eq!(filter_evidence(&answer), FilterEvidence::Scans);
        assert_eq!(read_mode(filter_evidence(&answer)), ReadMode::Point);
    }

    #[test]
    fn index_plans_and_empty_collections_take_the_in_path() {
        let ixscan = doc! { "queryPlanner": { "winningPlan": {
        "stage": "FETCH", "inputStage": { "stage": "IXSCAN", "indexName": "_id_" } } }, "ok": 1 };
        assert_eq!(filter_evidence(&ixscan), FilterEvidence::Indexed);
        let express = doc! { "queryPlanner": { "winningPlan": { "stage": "EXPRESS_IXSCAN" } } };
        assert_eq!(filter_evidence(&express), FilterEvidence::Indexed);
        let eof = doc! { "queryPlanner": { "winningPlan": { "stage": "EOF" } } };
        assert_eq!(filter_evidence(&eof), FilterEvidence::Indexed);
        let pushed = doc! { "filterPushdown": true, "queryPlanner": {} };
        assert_eq!(filter_evidence(&pushed), FilterEvidence::Unknown);
        assert_eq!(read_mode(FilterEvidence::Unknown), ReadMode::In);
    }

    #[test]
    fn collscan_anywhere_in_the_plan_counts_as_a_scan() {
        let answer = doc! { "queryPlanner": { "winningPlan": { "stage": "SHARD_MERGE",
        "shards": [ { "winningPlan": { "stage": "COLLSCAN" } } ] } } };
        assert_eq!(filter_evidence(&answer), FilterEvidence::Scans);
    }

    #[test]
    fn statements_follow_hello_and_the_scan_evidence() {
        let hello = doc! { "maxWriteBatchSize": 100_000_i32 };
        assert_eq!(
            statements_per_command(&hello, FilterEvidence::Indexed),
            100_000
        );
        assert_eq!(
            statements_per_command(&hello, FilterEvidence::Scans),
            UNPUSHED_STATEMENTS_PER_COMMAND
        );
        let small = doc! { "maxWriteBatchSize": 8_i64 };
        assert_eq!(statements_per_command(&small, FilterEvidence::Scans), 8);
        assert_eq!(statements_per_command(&small, FilterEvidence::Unknown), 8);
        assert_eq!(
            statements_per_command(&doc! {}, FilterEvidence::Unknown),
            DEFAULT_MAX_WRITE_BATCH
        );
        assert_eq!(
            statements_in_flight(FilterEvidence::Scans),
            Some(UNPUSHED_STATEMENTS_IN_FLIGHT)
        );
        assert_eq!(statements_in_flight(FilterEvidence::Indexed), None);
        assert_eq!(statements_in_flight(FilterEvidence::Unknown), None);
        let bad = doc! { "maxWriteBatchSize": -1_i32 };
        assert_eq!(
            statements_per_command(&bad, FilterEvidence::Unknown),
            DEFAULT_MAX_WRITE_BATCH
        );
    }
}
