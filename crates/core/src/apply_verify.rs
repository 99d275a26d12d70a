//! Post-acknowledgement check for several processes sharing one local
//! database (PM2 cluster instances): each process re-reads and sends, so the
//! one that read an older state can be applied on Atlas last. After Atlas
//! acknowledged a namespace's writes, the applied documents are read from
//! local once more; any whose state is no longer what was sent is reported
//! `Superseded` and sent again. The lane keeps its journal positions until
//! then, so a crash between the acknowledgement and this read replays it.
//! Why this makes Atlas end equal to local: docs/ARCHITECTURE.md,
//! "Order across processes".

use crate::apply::{id_ref, match_key, read_local, DocOutcome, ReadMode, TransientFailure};
use crate::mark::Namespace;
use bson::RawDocumentBuf;
use std::collections::HashMap;

/// Where and how the check reads local: as the send read it.
pub(crate) struct LocalRead<'a> {
    pub client: &'a mongodb::Client,
    pub gate: &'a crate::read_limit::ReadGate,
    pub mode: ReadMode,
    pub ns: &'a Namespace,
    pub scope: Option<&'a RawDocumentBuf>,
}

/// Turns the applied outcomes of one namespace (`idx` into `outcomes`,
/// `ids[k]` the `_id` of `idx[k]`, `sent` what the upserts carried) into
/// `Superseded` where local moved on (read within `scope`, as the send was). A failed read fails the batch as
/// transient: it is resent and checked again, which is harmless.
pub(crate) async fn mark_superseded(
    read: LocalRead<'_>,
    ids: &[&RawDocumentBuf],
    idx: &[usize],
    sent: &HashMap<Vec<u8>, RawDocumentBuf>,
    outcomes: &mut [Option<DocOutcome>],
) -> Result<(), TransientFailure> {
    let applied: Vec<usize> = (0..idx.len())
        .filter(|&k| {
            matches!(
                outcomes[idx[k]],
                Some(DocOutcome::Upserted | DocOutcome::Deleted)
            )
        })
        .collect();
    if applied.is_empty() {
        return Ok(());
    }
    let check: Vec<&RawDocumentBuf> = applied.iter().map(|&k| ids[k]).collect();
    let now = read_local(
        read.client,
        read.gate,
        read.mode,
        read.ns,
        &check,
        read.scope,
    )
    .await?;
    for k in applied {
        let Some(v) = id_ref(ids[k]) else { continue };
        let key = match_key(v);
        if !same_state(sent.get(&key), now.get(&key)) {
            outcomes[idx[k]] = Some(DocOutcome::Superseded);
        }
    }
    Ok(())
}

/// Same raw bytes, or absent on both reads (a delete that still holds).
fn same_state(sent: Option<&RawDocumentBuf>, now: Option<&RawDocumentBuf>) -> bool {
    match (sent, now) {
        (Some(a), Some(b)) => a.as_bytes() == b.as_bytes(),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn a_state_is_the_same_only_byte_for_byte() {
        let a = rawdoc! { "_id": 1, "n": 1 };
        let b = rawdoc! { "_id": 1, "n": 2 };
        // Same value, other BSON type: local changed as far as Atlas is concerned.
        let c = rawdoc! { "_id": 1, "n": 1.0 };
        assert!(same_state(Some(&a), Some(&a.clone())));
        assert!(!same_state(Some(&a), Some(&b)));
        assert!(!same_state(Some(&a), Some(&c)));
        assert!(same_state(None, None));
        assert!(!same_state(None, Some(&a)));
        assert!(!same_state(Some(&a), None));
    }
}
