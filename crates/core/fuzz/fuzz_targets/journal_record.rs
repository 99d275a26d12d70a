//! Fuzzes the journal record decoder and the segment scanner on arbitrary
//! bytes: no panic, and every byte of a segment is accounted for exactly once
//! as a valid record, a corrupt region or the torn tail.

#![no_main]

use dualsync_core::journal::{record, walk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seg, body)) = data.split_first() else {
        return;
    };
    let seg = u64::from(seg) + 1;

    // One record at the start of arbitrary bytes: valid only if re-encoding
    // its payload at the same position gives back the very same bytes.
    let pos = record::position(seg, 0);
    if let Ok(payload) = record::decode(body, pos) {
        let mut again = Vec::new();
        record::encode_into(&mut again, pos, payload);
        assert_eq!(&body[..again.len()], &again[..]);
    }

    // The whole input as a segment file, walked the way recovery walks it.
    let s = walk::scan_bytes(body, seg);
    let mut items: Vec<(u64, u64, bool)> = s
        .records
        .iter()
        .map(|&(off, len)| (off, off + record::record_len(len as usize), true))
        .chain(s.corrupt.iter().map(|&(off, end, _)| (off, end, false)))
        .collect();
    items.sort_unstable();
    let mut cursor = 0u64;
    for (off, end, is_record) in items {
        assert_eq!(off, cursor, "gap or overlap at {off}");
        assert!(end > off);
        if is_record {
            let at = record::position(seg, off);
            let payload =
                record::decode(&body[off as usize..], at).expect("scanned record decodes");
            assert_eq!(record::record_len(payload.len()), end - off);
        }
        cursor = end;
    }
    match s.tail {
        Some(t) => assert_eq!(t, cursor, "tail must start where the last item ends"),
        None => assert_eq!(cursor, body.len() as u64, "bytes left unaccounted"),
    }

    // Round trip: the input cut into payloads (each length from one byte),
    // encoded as a segment, scans back exactly.
    let mut seg_bytes = Vec::new();
    let mut expect = Vec::new();
    let mut rest = body;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let (p, tail) = tail.split_at(n);
        let off = seg_bytes.len() as u64;
        expect.push((off, n as u32));
        record::encode_into(&mut seg_bytes, record::position(seg, off), p);
        rest = tail;
    }
    let s = walk::scan_bytes(&seg_bytes, seg);
    assert_eq!(s.records, expect);
    assert!(s.corrupt.is_empty() && s.tail.is_none());
});
