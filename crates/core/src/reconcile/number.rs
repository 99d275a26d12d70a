//! Exact numeric comparison across BSON's number types (Int32, Int64, Double,
//! Decimal128), the way MongoDB orders them in one bracket: by value, with NaN
//! below every other number and all NaNs equal.
//!
//! Int/Double pairs use exact integer arithmetic; anything involving a
//! Decimal128 goes through an exact rational comparison (big integers only when
//! the two magnitudes are too close to tell apart from their exponents).

use bson::{Decimal128, RawBsonRef};
use num_bigint::BigUint;
use std::cmp::Ordering;

/// A number as sign * coef * 2^pow2 * 5^pow5 (exact for every BSON number).
#[derive(Clone, Copy, Debug)]
enum Num {
    NaN,
    Inf {
        neg: bool,
    },
    Finite {
        neg: bool,
        coef: u128,
        pow2: i32,
        pow5: i32,
    },
}

/// Compares two values that are both numbers. Callers guarantee the types;
/// a non-number is treated as NaN rather than panicking.
pub(crate) fn compare_numbers(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> Ordering {
    use RawBsonRef::Double;
    match (as_i64(a), as_i64(b), a, b) {
        (Some(x), Some(y), _, _) => x.cmp(&y),
        (Some(x), None, _, Double(y)) => cmp_i64_f64(x, y),
        (None, Some(y), Double(x), _) => cmp_i64_f64(y, x).reverse(),
        (None, None, Double(x), Double(y)) => cmp_f64(x, y),
        _ => cmp_exact(to_num(a), to_num(b)),
    }
}

fn as_i64(v: RawBsonRef<'_>) -> Option<i64> {
    match v {
        RawBsonRef::Int32(i) => Some(i64::from(i)),
        RawBsonRef::Int64(i) => Some(i),
        _ => None,
    }
}

fn cmp_f64(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // Not total_cmp: -0.0 and 0.0 are the same number to MongoDB.
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Exact i64 vs f64 (casting either way loses precision above 2^53).
fn cmp_i64_f64(i: i64, f: f64) -> Ordering {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return Ordering::Greater;
    }
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // |t| < 2^63 and integral, so the cast is exact.
    match i.cmp(&(t as i64)) {
        Ordering::Equal => cmp_f64(t, f),
        o => o,
    }
}

fn to_num(v: RawBsonRef<'_>) -> Num {
    match v {
        RawBsonRef::Int32(i) => from_i64(i64::from(i)),
        RawBsonRef::Int64(i) => from_i64(i),
        RawBsonRef::Double(f) => from_f64(f),
        RawBsonRef::Decimal128(d) => from_decimal(d),
        _ => Num::NaN,
    }
}

fn from_i64(i: i64) -> Num {
    Num::Finite {
        neg: i < 0,
        coef: u128::from(i.unsigned_abs()),
        pow2: 0,
        pow5: 0,
    }
}

fn from_f64(f: f64) -> Num {
    if f.is_nan() {
        return Num::NaN;
    }
    if f.is_infinite() {
        return Num::Inf { neg: f < 0.0 };
    }
    let bits = f.to_bits();
    let neg = bits >> 63 == 1;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (coef, pow2) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    Num::Finite {
        neg,
        coef: u128::from(coef),
        pow2,
        pow5: 0,
    }
}

/// Decodes IEEE 754-2008 decimal128 (BID encoding, stored little-endian in BSON).
fn from_decimal(d: Decimal128) -> Num {
    let bits = u128::from_le_bytes(d.bytes());
    let neg = bits >> 127 == 1;
    let combination = (bits >> 122) & 0x1f;
    if combination == 0x1f {
        return Num::NaN;
    }
    if combination == 0x1e {
        return Num::Inf { neg };
    }
    const MAX_COEF: u128 = 9_999_999_999_999_999_999_999_999_999_999; // 10^34 - 1
    let (biased, coef) = if (bits >> 125) & 0b11 == 0b11 {
        // This form's implied coefficient is always above 10^34 - 1: non-canonical, so zero.
        (((bits >> 111) & 0x3fff) as i32, 0)
    } else {
        let c = bits & ((1u128 << 113) - 1);
        (
            ((bits >> 113) & 0x3fff) as i32,
            if c > MAX_COEF { 0 } else { c },
        )
    };
    let exp = biased - 6176;
    Num::Finite {
        neg,
        coef,
        pow2: exp,
        pow5: exp,
    }
}

fn cmp_exact(a: Num, b: Num) -> Ordering {
    // Rank: NaN < -Inf < finite < +Inf.
    let rank = |n: &Num| match n {
        Num::NaN => 0,
        Num::Inf { neg: true } => 1,
        Num::Finite { .. } => 2,
        Num::Inf { neg: false } => 3,
    };
    match (a, b) {
        (
            Num::Finite {
                neg: na,
                coef: ca,
                pow2: a2,
                pow5: a5,
            },
            Num::Finite {
                neg: nb,
                coef: cb,
                pow2: b2,
                pow5: b5,
            },
        ) => {
            let sign = |neg: bool, c: u128| match (c, neg) {
                (0, _) => 0,
                (_, true) => -1,
                (_, false) => 1,
            };
            let (sa, sb) = (sign(na, ca), sign(nb, cb));
            if sa != sb || sa == 0 {
                return sa.cmp(&sb);
            }
            let mag = cmp_magnitude((ca, a2, a5), (cb, b2, b5));
            if sa < 0 {
                mag.reverse()
            } else {
                mag
            }
        }
        _ => rank(&a).cmp(&rank(&b)),
    }
}

/// Compares c1*2^x1*5^y1 with c2*2^x2*5^y2, both coefficients non-zero.
fn cmp_magnitude((c1, x1, y1): (u128, i32, i32), (c2, x2, y2): (u128, i32, i32)) -> Ordering {
    // log2 estimates, each within 1 of the truth: decide cheaply when far apart.
    let est = |c: u128, x: i32, y: i32| {
        f64::from(128 - c.leading_zeros()) + f64::from(x) + f64::from(y) * 5f64.log2()
    };
    let gap = est(c1, x1, y1) - est(c2, x2, y2);
    if gap > 2.0 {
        return Ordering::Greater;
    }
    if gap < -2.0 {
        return Ordering::Less;
    }
    // Close magnitudes imply close exponents, so these integers stay small.
    let (min2, min5) = (x1.min(x2), y1.min(y2));
    let scale = |c: u128, x: i32, y: i32| {
        let five = BigUint::from(5u32).pow((y - min5).unsigned_abs());
        (BigUint::from(c) * five) << (x - min2).unsigned_abs()
    };
    scale(c1, x1, y1).cmp(&scale(c2, x2, y2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> RawBsonRef<'static> {
        RawBsonRef::Decimal128(Decimal128::from_str(s).unwrap())
    }

    #[test]
    fn integers_and_doubles_compare_exactly() {
        use RawBsonRef::{Double, Int32, Int64};
        assert_eq!(compare_numbers(Int32(1), Double(1.0)), Ordering::Equal);
        assert_eq!(compare_numbers(Int64(1), Double(1.5)), Ordering::Less);
        assert_eq!(compare_numbers(Double(-0.0), Int32(0)), Ordering::Equal);
        // 2^53 + 1 is not a double; a lossy cast would call these equal.
        let big = (1i64 << 53) + 1;
        assert_eq!(
            compare_numbers(Int64(big), Double((1u64 << 53) as f64)),
            Ordering::Greater
        );
        assert_eq!(
            compare_numbers(Int64(i64::MAX), Double(i64::MAX as f64)),
            Ordering::Less
        );
        assert_eq!(
            compare_numbers(Int64(i64::MIN), Double(i64::MIN as f64)),
            Ordering::Equal
        );
        assert_eq!(
            compare_numbers(Double(f64::NAN), Int64(i64::MIN)),
            Ordering::Less
        );
        assert_eq!(
            compare_numbers(Double(f64::NAN), Double(f64::NAN)),
            Ordering::Equal
        );
        assert_eq!(
            compare_numbers(Double(f64::NEG_INFINITY), Int64(i64::MIN)),
            Ordering::Less
        );
    }

    #[test]
    fn decimals_compare_by_value_with_other_numbers() {
        use RawBsonRef::{Double, Int32, Int64};
        assert_eq!(compare_numbers(dec("1.5"), Double(1.5)), Ordering::Equal);
        assert_eq!(compare_numbers(dec("10E-1"), Int32(1)), Ordering::Equal);
        assert_eq!(compare_numbers(dec("1.000"), dec("1")), Ordering::Equal);
        assert_eq!(compare_numbers(dec("0.1"), Double(0.1)), Ordering::Less); // 0.1f64 is 0.1000000000000000055...
        assert_eq!(compare_numbers(dec("-0"), Int32(0)), Ordering::Equal);
        assert_eq!(compare_numbers(dec("-2"), Int64(-1)), Ordering::Less);
        assert_eq!(
            compare_numbers(dec("1E6000"), Double(f64::MAX)),
            Ordering::Greater
        );
        assert_eq!(
            compare_numbers(dec("1E-6000"), Double(5e-324)),
            Ordering::Less
        );
        assert_eq!(compare_numbers(dec("1E-6000"), Int32(0)), Ordering::Greater);
        assert_eq!(
            compare_numbers(dec("NaN"), Double(f64::NAN)),
            Ordering::Equal
        );
        assert_eq!(
            compare_numbers(dec("NaN"), dec("-Infinity")),
            Ordering::Less
        );
        assert_eq!(
            compare_numbers(dec("Infinity"), Double(f64::INFINITY)),
            Ordering::Equal
        );
        assert_eq!(
            compare_numbers(dec("-Infinity"), dec("-1E6111")),
            Ordering::Less
        );
        assert_eq!(
            compare_numbers(dec("9223372036854775807"), Int64(i64::MAX)),
            Ordering::Equal
        );
        assert_eq!(
            compare_numbers(dec("9223372036854775806.5"), Int64(i64::MAX)),
            Ordering::Less
        );
    }
}
