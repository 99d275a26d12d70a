'use strict'
// Summary statistics over plain sorted arrays: exact, simple, and enough for the few
// hundred thousand samples a scenario keeps.

/**
 * Value at quantile q (0..1) of an ascending array, nearest-rank.
 * @param {number[] | Float64Array} sorted
 * @param {number} q
 */
function quantile (sorted, q) {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i]
}

/**
 * Summarises samples (any unit).
 * @param {number[]} samples
 * @returns {{n: number, mean: number, min: number, median: number, p90: number, p99: number, max: number}}
 */
function summarize (samples) {
  const s = Float64Array.from(samples).sort()
  let sum = 0
  for (const v of s) sum += v
  return {
    n: s.length,
    mean: s.length ? sum / s.length : NaN,
    min: s.length ? s[0] : NaN,
    median: quantile(s, 0.5),
    p90: quantile(s, 0.9),
    p99: quantile(s, 0.99),
    max: s.length ? s[s.length - 1] : NaN
  }
}

/** Rounds for reports: 3 significant digits, integers kept whole. */
function round (v, digits = 3) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return v
  if (Math.abs(v) >= 10 ** digits) return Math.round(v)
  return Number(v.toPrecision(digits))
}

/** Nanoseconds since an arbitrary origin, as a Number (exact below 2^53 ns ≈ 104 days). */
function nowNs () {
  return Number(process.hrtime.bigint())
}

module.exports = { quantile, summarize, round, nowNs }
