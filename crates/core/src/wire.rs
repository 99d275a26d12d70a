//! The wire form of a mark as the JS layer encodes it (lib/wire.js): a kind
//! `k` that says how to read the value `v`. Read by the binding (marks passed
//! as call arguments) and by the capture ring (marks written into shared
//! memory), so both take exactly the same marks.

use crate::mark::{id_doc, id_value, MarkKind};
use crate::queue::NewMark;
use bson::Bson;

/// The op kinds (`k` of an op): the one table. lib/wire.js holds the same
/// names, checked against `opKinds()` by `__test__/binding.test.js`.
pub mod kind {
    pub const OBJECT_ID: u32 = 0;
    pub const STRING: u32 = 1;
    pub const INT32: u32 = 2;
    pub const DOUBLE: u32 = 3;
    pub const INT64: u32 = 4;
    pub const BSON: u32 = 5;
    pub const DATE: u32 = 6;
    pub const COLLECTION: u32 = 9;
    /// Name → value, for `opKinds()`.
    pub const TABLE: &[(&str, u32)] = &[
        ("OBJECT_ID", OBJECT_ID),
        ("STRING", STRING),
        ("INT32", INT32),
        ("DOUBLE", DOUBLE),
        ("INT64", INT64),
        ("BSON", BSON),
        ("DATE", DATE),
        ("COLLECTION", COLLECTION),
    ];
}

/// The value `v` of a wire op: a 24-hex ObjectId, a string or an Int64's
/// decimal digits (`Str`); an int32, double or Date in ms (`Num`); a BSON
/// document `{_id: …}` (`Bytes`); nothing for a collection mark.
#[derive(Debug, Clone, Copy)]
pub enum WireValue<'a> {
    None,
    Str(&'a str),
    Num(f64),
    Bytes(&'a [u8]),
}

fn id_from_wire(k: u32, v: WireValue<'_>) -> Result<Bson, String> {
    use WireValue::*;
    match (k, v) {
        (kind::OBJECT_ID, Str(hex)) => bson::oid::ObjectId::parse_str(hex)
            .map(Bson::ObjectId)
            .map_err(|_| format!("id {hex:?} is not a 24-character hex ObjectId")),
        (kind::STRING, Str(s)) => Ok(Bson::String(s.to_owned())),
        (kind::INT32, Num(n))
            if n.fract() == 0.0 && n >= i32::MIN as f64 && n <= i32::MAX as f64 =>
        {
            Ok(Bson::Int32(n as i32))
        }
        (kind::DOUBLE, Num(n)) => Ok(Bson::Double(n)),
        (kind::DATE, Num(ms)) if ms.is_finite() => {
            Ok(Bson::DateTime(bson::DateTime::from_millis(ms as i64)))
        }
        (kind::INT64, Str(s)) => s
            .parse::<i64>()
            .map(Bson::Int64)
            .map_err(|_| format!("id {s:?} is not a 64-bit integer")),
        (kind::BSON, Bytes(buf)) => {
            let raw = bson::RawDocumentBuf::from_bytes(buf.to_vec())
                .map_err(|e| format!("id BSON is invalid: {e}"))?;
            id_value(&raw).ok_or_else(|| "id BSON has no valid _id field".to_owned())
        }
        (k, _) => Err(format!("id does not match its kind {k}")),
    }
}

/// One wire op as a mark; the error says what is wrong with it (the caller
/// adds which op it was).
pub fn mark_from_wire(
    coll: String,
    db: String,
    k: u32,
    v: WireValue<'_>,
    intent: bool,
) -> Result<NewMark, String> {
    if k == kind::COLLECTION {
        return Ok(NewMark {
            kind: if intent {
                MarkKind::CollectionIntent
            } else {
                MarkKind::Collection
            },
            db,
            coll,
            id: bson::RawDocumentBuf::new(),
        });
    }
    let id = id_doc(id_from_wire(k, v)?).map_err(|e| e.to_string())?;
    Ok(NewMark {
        kind: if intent {
            MarkKind::Intent
        } else {
            MarkKind::Document
        },
        db,
        coll,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_its_own_value_and_refuses_another() {
        let oid = "65a1b2c3d4e5f60718293a4b";
        let ok = [
            (kind::OBJECT_ID, WireValue::Str(oid)),
            (kind::STRING, WireValue::Str("a")),
            (kind::INT32, WireValue::Num(7.0)),
            (kind::DOUBLE, WireValue::Num(0.5)),
            (kind::INT64, WireValue::Str("9007199254740993")),
            (kind::DATE, WireValue::Num(1.7e12)),
        ];
        for (k, v) in ok {
            let m = mark_from_wire("c".into(), "d".into(), k, v, false).unwrap();
            assert_eq!(m.kind, MarkKind::Document, "kind {k}");
            assert!(id_value(&m.id).is_some(), "kind {k}");
        }
        let bad = [
            (kind::OBJECT_ID, WireValue::Str("xyz")),
            (kind::INT32, WireValue::Num(0.5)),
            (kind::INT64, WireValue::Str("1e3")),
            (kind::STRING, WireValue::Num(1.0)),
            (kind::BSON, WireValue::Bytes(&[1, 2, 3])),
            (42, WireValue::None),
        ];
        for (k, v) in bad {
            assert!(
                mark_from_wire("c".into(), "d".into(), k, v, false).is_err(),
                "kind {k}"
            );
        }
        let c = mark_from_wire(
            "c".into(),
            "d".into(),
            kind::COLLECTION,
            WireValue::None,
            true,
        );
        assert_eq!(c.unwrap().kind, MarkKind::CollectionIntent);
    }
}
