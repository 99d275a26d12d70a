
// The proxy's bandwidth cap (token bucket), driven by an injected clock: no timing involved.

import { describe, it, expect } from 'vitest';
import { TokenBucket } from './helpers/token-bucket.js';

function clock(start = 1000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe('TokenBucket', () => {
  it('lets a burst through at once and paces what follows at the rate', () => {
    const c = clock();
    const b = new TokenBucket({ rate: 2_000_000, burst: 100_000, now: c.now });
    expect(b.reserve(100_000)).toBe(0);
    // 2 MB/s: 1 MB more, with no time passing, leaves after 0.5 s
    expect(b.reserve(1_000_000)).toBeCloseTo(500, 6);
    // and the next 20 KB queue behind it
    expect(b.reserve(20_000)).toBeCloseTo(510, 6);
  });

  it('repays its debt as the clock advances (bytes leave at the rate, in order)', () => {
    const c = clock();
    const b = new TokenBucket({ rate: 1000, burst: 0, now: c.now });
    expect(b.reserve(500)).toBeCloseTo(500, 6);
    c.t += 200;
    // 300 ms of debt left, plus 100 bytes at 1000 B/s
    expect(b.reserve(100)).toBeCloseTo(400, 6);
    c.t += 10_000;
    expect(b.reserve(0)).toBe(0);
  });

  it('refills to the burst size at most after an idle period', () => {
    const c = clock();
    const b = new TokenBucket({ rate: 1000, burst: 50, now: c.now });
    c.t += 60_000; // a minute idle must not bank a minute of bytes
    expect(b.reserve(50)).toBe(0);
    expect(b.reserve(10)).toBeCloseTo(10, 6);
  });

  it('over a long run sends exactly rate × time (plus the burst)', () => {
    const c = clock();
    const b = new TokenBucket({ rate: 10_000_000, burst: 64 * 1024, now: c.now });
    let last = 0;
    // 1000 chunks of 16 KiB arriving 1 ms apart: 16.4 MB offered at 16.4 MB/s to a 10 MB/s link
    for (let i = 0; i < 1000; i++) {
      last = b.reserve(16 * 1024) + c.t;
      c.t += 1;
    }
    const expected = 1000 + (1000 * 16 * 1024 - 64 * 1024) / 10_000; // start + (bytes - burst) / rate, in ms
    expect(last).toBeCloseTo(expected, 3);
  });

  it('rejects a rate or burst that is not a positive number, naming it', () => {
    expect(() => new TokenBucket({ rate: 0 })).toThrow(/rate must be > 0/);
    expect(() => new TokenBucket({ rate: Number.NaN })).toThrow(/rate/);
    expect(() => new TokenBucket({ rate: 10, burst: -1 })).toThrow(/burst must be >= 0/);
  });
});

describe('proxy.setBandwidth', () => {
  it('shows the cap in stats, removes it with 0, and rejects a rate that is not >= 0', async () => {
    const { startProxy } = await import('./helpers/proxy.js');
    // never connected to: the target is only a port number here
    const proxy = await startProxy({ target: { port: 9 } });
    try {
      proxy.setBandwidth(2_000_000);
      expect(proxy.stats().bytesPerSec).toBe(2_000_000);
      proxy.setBandwidth(0);
      expect(proxy.stats().bytesPerSec).toBe(0);
      expect(() => proxy.setBandwidth(-1)).toThrow(/setBandwidth: expected bytes\/s >= 0/);
      expect(() => proxy.setBandwidth(Number.NaN)).toThrow(/setBandwidth/);
    } finally {
      await proxy.close();
    }
  });
});
