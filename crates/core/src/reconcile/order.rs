//! MongoDB's sort order for BSON values, used to merge-join two `_id`-sorted
//! streams. Values first order by type bracket (the server's
//! `canonicalizeBSONType`), then by value within the bracket.
//!
//! Brackets: MinKey < Undefined < Null < numbers < String/Symbol < Object <
//! Array < Binary < ObjectId < Boolean < DateTime < Timestamp < Regex <
//! DBPointer < Code < CodeWithScope < MaxKey. (The server ranks Undefined just
//! below Null; MongoDB refuses undefined as an `_id`, so it matters little.)
//!
//! A malformed element inside a document or array ends that container for
//! ordering purposes, so the comparison stays total and never panics; the
//! byte-level document comparison still sees the damage.

use super::number::compare_numbers;
use bson::{RawArray, RawBsonRef, RawDocument, RawDocumentBuf};
use std::cmp::Ordering;

/// The server's canonical type rank.
fn bracket(v: &RawBsonRef<'_>) -> i32 {
    match v {
        RawBsonRef::MinKey => -1,
        RawBsonRef::Undefined => 0,
        RawBsonRef::Null => 5,
        RawBsonRef::Double(_)
        | RawBsonRef::Int32(_)
        | RawBsonRef::Int64(_)
        | RawBsonRef::Decimal128(_) => 10,
        RawBsonRef::String(_) | RawBsonRef::Symbol(_) => 15,
        RawBsonRef::Document(_) => 20,
        RawBsonRef::Array(_) => 25,
        RawBsonRef::Binary(_) => 30,
        RawBsonRef::ObjectId(_) => 35,
        RawBsonRef::Boolean(_) => 40,
        RawBsonRef::DateTime(_) => 45,
        RawBsonRef::Timestamp(_) => 47,
        RawBsonRef::RegularExpression(_) => 50,
        RawBsonRef::DbPointer(_) => 55,
        RawBsonRef::JavaScriptCode(_) => 60,
        RawBsonRef::JavaScriptCodeWithScope(_) => 65,
        RawBsonRef::MaxKey => 127,
    }
}

/// Orders two BSON values as a MongoDB server sorts them.
pub fn compare_values(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> Ordering {
    use RawBsonRef as R;
    let by_bracket = bracket(&a).cmp(&bracket(&b));
    if by_bracket != Ordering::Equal {
        return by_bracket;
    }
    match (a, b) {
        (R::String(x) | R::Symbol(x), R::String(y) | R::Symbol(y)) => x.cmp(y),
        (R::Document(x), R::Document(y)) => compare_documents(x, y),
        (R::Array(x), R::Array(y)) => compare_arrays(x, y),
        (R::Binary(x), R::Binary(y)) => {
            // The server compares the stored length (the old subtype 2 carries
            // an extra inner length prefix), then subtype, then bytes.
            let len = |b: &bson::RawBinaryRef<'_>| {
                b.bytes.len()
                    + if b.subtype == bson::spec::BinarySubtype::BinaryOld {
                        4
                    } else {
                        0
                    }
            };
            len(&x)
                .cmp(&len(&y))
                .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
                .then_with(|| x.bytes.cmp(y.bytes))
        }
        (R::ObjectId(x), R::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (R::Boolean(x), R::Boolean(y)) => x.cmp(&y),
        (R::DateTime(x), R::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (R::Timestamp(x), R::Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (R::RegularExpression(x), R::RegularExpression(y)) => x
            .pattern
            .cmp(y.pattern)
            .then_with(|| x.options.cmp(y.options)),
        (R::DbPointer(_), R::DbPointer(_)) => {
            // The driver keeps DBPointer's parts private; the server compares
            // value size, then value bytes, which the encoded form preserves.
            let (x, y) = (encoded(a), encoded(b));
            x.len().cmp(&y.len()).then_with(|| x.cmp(&y))
        }
        (R::JavaScriptCode(x), R::JavaScriptCode(y)) => x.cmp(y),
        (R::JavaScriptCodeWithScope(x), R::JavaScriptCodeWithScope(y)) => x
            .code
            .cmp(y.code)
            .then_with(|| compare_documents(x.scope, y.scope)),
        (x, y) if bracket(&x) == 10 => compare_numbers(x, y),
        // MinKey, MaxKey, Null, Undefined: one value per bracket.
        _ => Ordering::Equal,
    }
}

fn encoded(v: RawBsonRef<'_>) -> Vec<u8> {
    let mut doc = RawDocumentBuf::new();
    doc.append_ref("", v);
    doc.into_bytes()
}

/// Field by field: type bracket, then name, then value; a prefix sorts first.
fn compare_documents(x: &RawDocument, y: &RawDocument) -> Ordering {
    let mut xs = x.iter().map_while(Result::ok);
    let mut ys = y.iter().map_while(Result::ok);
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((kx, vx)), Some((ky, vy))) => {
                let o = bracket(&vx)
                    .cmp(&bracket(&vy))
                    .then_with(|| kx.cmp(ky))
                    .then_with(|| compare_values(vx, vy));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Element by element (array keys are positions, equal at equal positions).
fn compare_arrays(x: &RawArray, y: &RawArray) -> Ordering {
    let mut xs = x.into_iter().map_while(Result::ok);
    let mut ys = y.into_iter().map_while(Result::ok);
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(vx), Some(vy)) => {
                let o = compare_values(vx, vy);
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, Bson, DateTime, Decimal128, Regex, Timestamp};
    use proptest::prelude::*;
    use std::str::FromStr;

    /// Compares two owned values through their raw form.
    fn cmp(a: &Bson, b: &Bson) -> Ordering {
        let (da, db) = (raw(a), raw(b));
        compare_values(da.get("v").unwrap().unwrap(), db.get("v").unwrap().unwrap())
    }

    fn raw(v: &Bson) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&doc! { "v": v.clone() }).unwrap()
    }

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(Decimal128::from_str(s).unwrap())
    }

    fn bin(subtype: BinarySubtype, bytes: &[u8]) -> Bson {
        Bson::Binary(Binary {
            subtype,
            bytes: bytes.to_vec(),
        })
    }

    #[test]
    fn brackets_follow_the_server_order() {
        let oid = ObjectId::parse_str("000000000000000000000000").unwrap();
        // One value per bracket, each chosen to be "small" within its bracket,
        // listed in the order the server sorts them.
        let ladder = vec![
            Bson::MinKey,
            Bson::Undefined,
            Bson::Null,
            Bson::Double(f64::NAN),
            Bson::Int64(i64::MAX),
            Bson::String(String::new()),
            Bson::Symbol("zzz".into()),
            Bson::Document(doc! {}),
            Bson::Array(vec![]),
            bin(BinarySubtype::Generic, b""),
            Bson::ObjectId(oid),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(DateTime::from_millis(i64::MIN)),
            Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            }),
            Bson::RegularExpression(Regex {
                pattern: String::new(),
                options: String::new(),
            }),
            Bson::JavaScriptCode("zzz".into()),
            Bson::MaxKey,
        ];
        for (i, a) in ladder.iter().enumerate() {
            for (j, b) in ladder.iter().enumerate() {
                assert_eq!(cmp(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn values_within_brackets() {
        use Ordering::*;
        let cases: Vec<(Bson, Bson, Ordering)> = vec![
            (Bson::Int32(2), Bson::Double(10.0), Less),
            (Bson::Int32(1), dec("1.0"), Equal),
            (Bson::String("a".into()), Bson::Symbol("a".into()), Equal),
            (Bson::String("B".into()), Bson::String("a".into()), Less),
            (Bson::String("ab".into()), Bson::String("abc".into()), Less),
            (Bson::String("é".into()), Bson::String("z".into()), Greater),
            // Objects: bracket of the first field beats its name and value.
            (
                Bson::Document(doc! {"z": 1}),
                Bson::Document(doc! {"a": "x"}),
                Less,
            ),
            (
                Bson::Document(doc! {"a": 1}),
                Bson::Document(doc! {"b": 0}),
                Less,
            ),
            (
                Bson::Document(doc! {"a": 1}),
                Bson::Document(doc! {"a": 1.0}),
                Equal,
            ),
            (
                Bson::Document(doc! {"a": 1}),
                Bson::Document(doc! {"a": 1, "b": 0}),
                Less,
            ),
            (
                Bson::Document(doc! {"a": {"b": 2}}),
                Bson::Document(doc! {"a": {"b": 1}}),
                Greater,
            ),
            (
                Bson::Array(vec![1.into(), 2.into()]),
                Bson::Array(vec![1.into(), 3.into()]),
                Less,
            ),
            (
                Bson::Array(vec![2.into()]),
                Bson::Array(vec![1.into(), 9.into()]),
                Greater,
            ),
            (
                Bson::Array(vec![1.into()]),
                Bson::Array(vec![1.into(), 0.into()]),
                Less,
            ),
            // Binary: length first, then subtype, then bytes.
            (
                bin(BinarySubtype::UserDefined(0x80), b"a"),
                bin(BinarySubtype::Generic, b"aa"),
                Less,
            ),
            (
                bin(BinarySubtype::Uuid, b"zz"),
                bin(BinarySubtype::UserDefined(0x80), b"aa"),
                Less,
            ),
            (
                bin(BinarySubtype::Generic, b"ab"),
                bin(BinarySubtype::Generic, b"b"),
                Greater,
            ),
            (
                bin(BinarySubtype::BinaryOld, b""),
                bin(BinarySubtype::Generic, b"abc"),
                Greater,
            ),
            (
                Bson::ObjectId(ObjectId::parse_str("00000000000000000000000a").unwrap()),
                Bson::ObjectId(ObjectId::parse_str("0000000000000000000000a0").unwrap()),
                Less,
            ),
            (
                Bson::DateTime(DateTime::from_millis(-1)),
                Bson::DateTime(DateTime::from_millis(0)),
                Less,
            ),
            (
                Bson::Timestamp(Timestamp {
                    time: 1,
                    increment: 9,
                }),
                Bson::Timestamp(Timestamp {
                    time: 2,
                    increment: 0,
                }),
                Less,
            ),
            (
                Bson::Timestamp(Timestamp {
                    time: u32::MAX,
                    increment: 0,
                }),
                Bson::Timestamp(Timestamp {
                    time: 1,
                    increment: 0,
                }),
                Greater,
            ),
            (
                Bson::RegularExpression(Regex {
                    pattern: "a".into(),
                    options: "i".into(),
                }),
                Bson::RegularExpression(Regex {
                    pattern: "a".into(),
                    options: "".into(),
                }),
                Greater,
            ),
            (Bson::Null, Bson::Null, Equal),
            (Bson::MaxKey, Bson::MaxKey, Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(&a, &b), want, "{a:?} vs {b:?}");
            assert_eq!(cmp(&b, &a), want.reverse(), "{b:?} vs {a:?}");
        }
    }

    /// Scalars drawn from small pools so that ties across types are common.
    fn scalar() -> impl Strategy<Value = Bson> {
        prop_oneof![
            Just(Bson::MinKey),
            Just(Bson::MaxKey),
            Just(Bson::Null),
            Just(Bson::Undefined),
            (-3i32..3).prop_map(Bson::Int32),
            (-3i64..3).prop_map(Bson::Int64),
            prop_oneof![
                (-6i32..6).prop_map(|h| Bson::Double(f64::from(h) / 2.0)),
                Just(Bson::Double(f64::NAN)),
                Just(Bson::Double(f64::INFINITY)),
                Just(Bson::Double(-0.0)),
            ],
            (-30i64..30, -2i32..2).prop_map(|(c, e)| dec(&format!("{c}E{e}"))),
            prop_oneof![
                Just(dec("NaN")),
                Just(dec("-Infinity")),
                Just(dec("1E-6100"))
            ],
            "[ab]{0,2}".prop_map(Bson::String),
            "[ab]{0,2}".prop_map(Bson::Symbol),
            proptest::collection::vec(0u8..3, 0..3).prop_map(|b| bin(BinarySubtype::Generic, &b)),
            (0u8..3).prop_map(|b| Bson::ObjectId(ObjectId::from_bytes([b; 12]))),
            any::<bool>().prop_map(Bson::Boolean),
            (-2i64..2).prop_map(|m| Bson::DateTime(DateTime::from_millis(m))),
            (0u32..2, 0u32..2)
                .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        ]
    }

    fn value() -> impl Strategy<Value = Bson> {
        scalar().prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Bson::Array),
                proptest::collection::vec(("[ab]", inner), 0..3).prop_map(|fields| {
                    let mut d = bson::Document::new();
                    for (k, v) in fields {
                        d.insert(k, v);
                    }
                    Bson::Document(d)
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn is_a_total_order(values in proptest::collection::vec(value(), 1..7)) {
            for a in &values {
                prop_assert_eq!(cmp(a, a), Ordering::Equal, "reflexive on {:?}", a);
                for b in &values {
                    let ab = cmp(a, b);
                    prop_assert_eq!(ab, cmp(b, a).reverse(), "antisymmetric: {:?} vs {:?}", a, b);
                    for c in &values {
                        let bc = cmp(b, c);
                        if ab != Ordering::Greater && bc != Ordering::Greater {
                            let ac = cmp(a, c);
                            prop_assert!(ac != Ordering::Greater, "transitive: {:?} <= {:?} <= {:?}", a, b, c);
                            if ab == Ordering::Equal && bc == Ordering::Equal {
                                prop_assert_eq!(ac, Ordering::Equal, "equality transitive: {:?} {:?} {:?}", a, b, c);
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn sorting_agrees_with_pairwise_order(mut values in proptest::collection::vec(value(), 0..12)) {
            values.sort_by(cmp);
            for w in values.windows(2) {
                prop_assert!(cmp(&w[0], &w[1]) != Ordering::Greater);
            }
            for (i, a) in values.iter().enumerate() {
                for b in &values[i + 1..] {
                    prop_assert!(cmp(a, b) != Ordering::Greater, "{:?} after {:?}", a, b);
                }
            }
        }
    }
}
