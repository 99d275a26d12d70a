'use strict';
/**
 * Token bucket for the proxy's bandwidth cap: `rate` bytes per second refill a bucket of at most
 * `burst` bytes. A reservation larger than what the bucket holds goes into debt, so the bytes
 * after it wait for the debt to be repaid: queued chunks leave at the link's rate, in order.
 * The clock is injected (ms), so the shaping is testable without timing anything.
 */

class TokenBucket {
  /**
   * @param {{rate: number, burst?: number, now?: () => number}} opts rate in bytes/s (> 0),
   *   burst in bytes (default: 50 ms worth of rate, at least 16 KiB), now() in ms
   */
  constructor({ rate, burst, now = Date.now }) {
    if (!Number.isFinite(rate) || rate <= 0) throw new Error(`TokenBucket: rate must be > 0 bytes/s, got ${rate}`);
    const b = burst === undefined ? Math.max(16 * 1024, rate * 0.05) : burst;
    if (!Number.isFinite(b) || b < 0) throw new Error(`TokenBucket: burst must be >= 0 bytes, got ${burst}`);
    this.rate = rate;
    this.burst = b;
    this.now = now;
    this.tokens = b;
    this.at = now();
  }

  _refill() {
    const t = this.now();
    if (t > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) * this.rate) / 1000);
      this.at = t;
    }
  }

  /**
   * Takes `bytes` from the bucket.
   * @param {number} bytes
   * @returns {number} ms from now until those bytes have left (0 when the bucket covered them)
   */
  reserve(bytes) {
    this._refill();
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}

module.exports = { TokenBucket };
