'use strict';
/**
 * TCP proxy on 127.0.0.1 for fault injection between the addon and "Atlas".
 *
 * Modes:
 *  - pass:      forward bytes both ways (optionally delayed by setLatency(ms, jitter) and capped
 *               by setBandwidth(bytesPerSec): a token bucket per direction, shared by all
 *               connections like one link).
 *  - blackhole: connections stay open but nothing moves in either direction; new
 *               connections are accepted and held. Like a network partition, bytes
 *               already sent are held, not lost: they flow again when the mode
 *               returns to 'pass' (as TCP retransmission would deliver them).
 *  - reset:     every current connection is torn down with a TCP RST, and new ones are
 *               reset as soon as they are accepted.
 */

const net = require('node:net');
const { TokenBucket } = require('./token-bucket');

// Stop reading from a side when this many bytes wait to be delivered (latency queue).
const HIGH_WATER = 4 * 1024 * 1024;

/**
 * Starts a proxy forwarding to `target`.
 * @param {{target: {host?: string, port: number}, port?: number}} opts
 * @returns {Promise<{port: number, uri(baseUri: string): string, setMode(mode: 'pass'|'blackhole'|'reset'): void,
 *   setLatency(ms: number, jitter?: number): void, setBandwidth(bytesPerSec: number, opts?: {burst?: number}): void,
 *   stats(): object, close(): Promise<void>}>}
 */
async function startProxy({ target, port = 0 }) {
  if (!target || !Number.isInteger(Number(target.port))) {
    throw new Error('startProxy: target.port is required (target: {host, port})');
  }
  const targetHost = target.host || '127.0.0.1';
  const targetPort = Number(target.port);
  let mode = 'pass';
  let latencyMs = 0;
  let jitterMs = 0;
  // bandwidth cap per direction (null: unlimited)
  const buckets = { bytesToTarget: null, bytesFromTarget: null };
  let bytesPerSec = 0;
  const conns = new Set();
  const counters = { accepted: 0, resets: 0, bytesToTarget: 0, bytesFromTarget: 0 };

  /** One direction of a connection: a FIFO of chunks, each due at a time. */
  function makePipe(conn, from, to, counterKey) {
    const pipe = { queue: [], queued: 0, timer: null, ended: false };
    pipe.pump = () => {
      if (pipe.timer || mode !== 'pass' || conn.closed || !conn.upstreamReady) return;
      while (pipe.queue.length) {
        const head = pipe.queue[0];
        const wait = head.due - Date.now();
        if (wait > 0) {
          pipe.timer = setTimeout(() => {
            pipe.timer = null;
            pipe.pump();
          }, wait);
          return;
        }
        pipe.queue.shift();
        pipe.queued -= head.chunk.length;
        counters[counterKey] += head.chunk.length;
        to().write(head.chunk);
      }
      if (pipe.queued < HIGH_WATER && mode === 'pass') from().resume();
      if (pipe.ended) to().end();
    };
    pipe.onData = (chunk) => {
      // FIFO: a chunk never overtakes an earlier one, even when the latency drops mid-stream
      // or the jitter draws a shorter delay (as on TCP: jitter reorders connections, not bytes).
      const last = pipe.queue.length ? pipe.queue[pipe.queue.length - 1].due : 0;
      const bucket = buckets[counterKey];
      const sendMs = bucket ? bucket.reserve(chunk.length) : 0;
      const delay = sendMs + latencyMs + (jitterMs ? Math.random() * jitterMs : 0);
      pipe.queue.push({ chunk, due: Math.max(last, Date.now() + delay) });
      pipe.queued += chunk.length;
      if (pipe.queued >= HIGH_WATER) from().pause();
      pipe.pump();
    };
    pipe.onEnd = () => {
      pipe.ended = true;
      pipe.pump();
    };
    return pipe;
  }

  function connectUpstream(conn) {
    if (conn.upstream || conn.closed) return;
    const upstream = net.connect({ host: targetHost, port: targetPort });
    conn.upstream = upstream;
    upstream.on('connect', () => {
      conn.upstreamReady = true;
      conn.up.pump();
      conn.down.pump();
    });
    upstream.on('data', conn.down.onData);
    upstream.on('end', conn.down.onEnd);
    upstream.on('error', () => destroyConn(conn, false));
    upstream.on('close', () => destroyConn(conn, false));
  }

  function destroyConn(conn, withReset) {
    if (conn.closed) return;
    conn.closed = true;
    conns.delete(conn);
    for (const p of [conn.up, conn.down]) if (p.timer) clearTimeout(p.timer);
    for (const s of [conn.client, conn.upstream]) {
      if (!s || s.destroyed) continue;
      if (withReset) s.resetAndDestroy();
      else s.destroy();
    }
  }

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    counters.accepted += 1;
    if (mode === 'reset') {
      counters.resets += 1;
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const conn = { client, upstream: null, upstreamReady: false, closed: false };
    conn.up = makePipe(conn, () => conn.client, () => conn.upstream, 'bytesToTarget');
    conn.down = makePipe(conn, () => conn.upstream, () => conn.client, 'bytesFromTarget');
    conns.add(conn);
    client.on('data', conn.up.onData);
    client.on('end', conn.up.onEnd);
    client.on('error', () => destroyConn(conn, false));
    client.on('close', () => destroyConn(conn, false));
    if (mode === 'pass') {
      connectUpstream(conn);
      client.resume();
    }
    // blackhole: accepted but held (paused, no upstream) until the mode returns to pass.
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  const listenPort = server.address().port;

  return {
    port: listenPort,

    /** Rewrites a mongodb:// URI so its (single) host points at this proxy. */
    uri(baseUri) {
      const m = /^(mongodb:\/\/)([^@/]*@)?([^/?]+)(.*)$/.exec(baseUri);
      if (!m) throw new Error('proxy.uri: expected a mongodb:// URI');
      return `${m[1]}${m[2] || ''}127.0.0.1:${listenPort}${m[4]}`;
    },

    /** @param {'pass'|'blackhole'|'reset'} next */
    setMode(next) {
      if (!['pass', 'blackhole', 'reset'].includes(next)) {
        throw new Error(`proxy.setMode: unknown mode ${JSON.stringify(next)} (pass|blackhole|reset)`);
      }
      mode = next;
      if (next === 'reset') {
        for (const conn of [...conns]) {
          counters.resets += 1;
          destroyConn(conn, true);
        }
      } else if (next === 'blackhole') {
        for (const conn of conns) {
          conn.client.pause();
          if (conn.upstream) conn.upstream.pause();
        }
      } else {
        for (const conn of conns) {
          connectUpstream(conn);
          conn.client.resume();
          if (conn.upstream) conn.upstream.resume();
          conn.up.pump();
          conn.down.pump();
        }
      }
    },

    /**
     * Delays every chunk by `ms` plus a random 0..`jitter` ms, in both directions (order within
     * a connection preserved; different connections drift against each other).
     */
    setLatency(ms, jitter = 0) {
      if (!Number.isFinite(ms) || ms < 0) throw new Error(`proxy.setLatency: expected ms >= 0, got ${ms}`);
      if (!Number.isFinite(jitter) || jitter < 0) throw new Error(`proxy.setLatency: expected jitter >= 0, got ${jitter}`);
      latencyMs = ms;
      jitterMs = jitter;
    },

    /**
     * Caps each direction at `rate` bytes/s (0 removes the cap). The chunks' send time is added
     * to the latency; the bucket holds `burst` bytes (default 50 ms of rate, >= 16 KiB).
     * @param {number} rate bytes per second
     * @param {{burst?: number}} [opts]
     */
    setBandwidth(rate, opts = {}) {
      if (!Number.isFinite(rate) || rate < 0) throw new Error(`proxy.setBandwidth: expected bytes/s >= 0, got ${rate}`);
      bytesPerSec = rate;
      for (const k of Object.keys(buckets)) buckets[k] = rate > 0 ? new TokenBucket({ rate, burst: opts.burst }) : null;
    },

    /**
     * Counters: mode, latencyMs, jitterMs, bytesPerSec, accepted, active, resets, bytesToTarget and bytesFromTarget (delivered),
     * pendingBytes (read but not yet delivered: delayed or held).
     */
    stats() {
      let pendingBytes = 0;
      for (const conn of conns) pendingBytes += conn.up.queued + conn.down.queued;
      return { mode, latencyMs, jitterMs, bytesPerSec, active: conns.size, pendingBytes, ...counters };
    },

    /** Stops listening and drops every connection. */
    close() {
      for (const conn of [...conns]) destroyConn(conn, false);
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

module.exports = { startProxy };
