// Proves each fault mode of the test proxy against a real server (FerretDB or mongod).
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import net from 'node:net';
import { BSON, MongoClient } from 'mongodb';
import testbed from '../scripts/testbed.js';
import { startProxy } from './helpers/proxy.js';

let server;
let proxy;
const clients = [];

beforeAll(async () => {
  server = await testbed.startServer({ name: 'proxy-target' });
});
afterAll(async () => {
  if (server) await server.destroy();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close(true).catch(() => {})));
  const sockets = rawSockets.splice(0);
  for (const s of sockets) s.destroy();
  if (proxy) await proxy.close();
  proxy = null;
});

/** A driver client through the proxy, with short timeouts so faults surface quickly. */
function client(uri, timeoutMs = 1500) {
  const c = new MongoClient(uri, {
    serverSelectionTimeoutMS: timeoutMs,
    socketTimeoutMS: timeoutMs,
    connectTimeoutMS: timeoutMs,
    maxPoolSize: 1,
  });
  clients.push(c);
  return c;
}

// ---- raw wire access: one TCP connection, OP_MSG pings, replies matched by requestId ----
const rawSockets = [];
let nextRequestId = 1;

function opMsgPing(requestId) {
  const body = BSON.serialize({ ping: 1, $db: 'admin' });
  const header = Buffer.alloc(21);
  header.writeInt32LE(21 + body.length, 0);
  header.writeInt32LE(requestId, 4);
  header.writeInt32LE(0, 8);
  header.writeInt32LE(2013, 12); // OP_MSG
  header.writeUInt32LE(0, 16); // flag bits
  header.writeUInt8(0, 20); // section kind 0: body
  return Buffer.concat([header, body]);
}

/** Opens a raw socket; resolves with { socket, replies: [{responseTo, ok, at}], errors: [] }. */
function rawConnect(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    rawSockets.push(socket);
    const conn = { socket, replies: [], errors: [], closed: false };
    let buf = Buffer.alloc(0);
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= buf.readInt32LE(0)) {
        const len = buf.readInt32LE(0);
        const msg = buf.subarray(0, len);
        buf = buf.subarray(len);
        const doc = BSON.deserialize(msg.subarray(21));
        conn.replies.push({ responseTo: msg.readInt32LE(8), ok: doc.ok, at: Date.now() });
      }
    });
    socket.on('error', (err) => conn.errors.push(err));
    socket.on('close', () => {
      conn.closed = true;
    });
    socket.once('connect', () => resolve(conn));
    socket.once('error', reject);
  });
}

function sendPing(conn) {
  const id = nextRequestId++;
  conn.socket.write(opMsgPing(id));
  return id;
}

/** Polls `cond` until true or the deadline passes (then fails with `what`). */
async function until(cond, what, ms = 10_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function timedPing(c) {
  const t0 = performance.now();
  const res = await c.db('admin').command({ ping: 1 });
  expect(res.ok).toBe(1);
  return performance.now() - t0;
}

describe('proxy', () => {
  test('pass forwards both ways and counts bytes', async () => {
    proxy = await startProxy({ target: { port: server.port } });
    const uri = proxy.uri(server.uri);
    // Only the host changes: credentials (documentdb's SCRAM login) are kept.
    expect(uri).toBe(server.uri.replace(`127.0.0.1:${server.port}`, `127.0.0.1:${proxy.port}`));
    expect(uri).not.toBe(server.uri);
    const c = client(uri);
    await c.db('proxytest').collection('c').insertOne({ _id: 'through-proxy', n: 7 });
    // Read it back directly from the server: the write really went through.
    const direct = client(server.uri);
    expect(await direct.db('proxytest').collection('c').findOne({ _id: 'through-proxy' })).toEqual({
      _id: 'through-proxy',
      n: 7,
    });
    const s = proxy.stats();
    expect(s.mode).toBe('pass');
    expect(s.accepted).toBeGreaterThan(0);
    expect(s.bytesToTarget).toBeGreaterThan(0);
    expect(s.bytesFromTarget).toBeGreaterThan(0);
    await direct.db('proxytest').dropDatabase();
  });

  test('uri() keeps credentials, path and options', async () => {
    proxy = await startProxy({ target: { port: server.port } });
    expect(proxy.uri('mongodb://u:p@10.1.2.3:27017/db?authSource=admin')).toBe(
      `mongodb://u:p@127.0.0.1:${proxy.port}/db?authSource=admin`,
    );
    expect(() => proxy.uri('http://x')).toThrow(/mongodb:\/\//);
    expect(() => proxy.setMode('drop')).toThrow(/unknown mode/);
    expect(() => proxy.setLatency(-1)).toThrow(/ms >= 0/);
  });

  test('blackhole holds open connections and new ones; pass delivers what was held', async () => {
    proxy = await startProxy({ target: { port: server.port } });
    const conn = await rawConnect(proxy.port);
    const first = sendPing(conn);
    await until(() => conn.replies.length === 1, 'ping reply in pass mode');
    expect(conn.replies[0]).toMatchObject({ responseTo: first, ok: 1 });

    // A request already inside the proxy (delayed) when the blackhole starts is held too.
    proxy.setLatency(200);
    const inFlight = sendPing(conn);
    await until(() => proxy.stats().pendingBytes > 0, 'ping queued in the proxy');
    proxy.setMode('blackhole');
    const sentBefore = proxy.stats().bytesToTarget;
    proxy.setLatency(0);
    const held = sendPing(conn);
    const late = await rawConnect(proxy.port); // accepted while blackholed
    const lateId = sendPing(late);

    // The driver sees a timeout, not an error from the network.
    const c = client(proxy.uri(server.uri), 800);
    const err = await c
      .db('admin')
      .command({ ping: 1 })
      .then(
        () => null,
        (e) => e,
      );
    expect(err).not.toBeNull();
    expect(err.name).toMatch(/ServerSelectionError|MongoNetworkTimeoutError/);
    // Nothing came back on the raw connections meanwhile, and they are still open.
    expect(conn.replies.length).toBe(1);
    expect(late.replies.length).toBe(0);
    expect(conn.closed || late.closed).toBe(false);
    expect(proxy.stats().active).toBeGreaterThanOrEqual(2);
    // Nor did anything reach the server (the delayed ping's timer fired during the blackhole).
    expect(proxy.stats().bytesToTarget).toBe(sentBefore);

    proxy.setMode('pass');
    await until(() => conn.replies.length === 3 && late.replies.length === 1, 'held pings answered after pass');
    expect(conn.replies.slice(1).map((r) => r.responseTo)).toEqual([inFlight, held]);
    expect(conn.replies.every((r) => r.ok === 1)).toBe(true);
    expect(late.replies[0]).toMatchObject({ responseTo: lateId, ok: 1 });
    expect(conn.errors).toEqual([]);
  });

  test('reset tears down current connections with RST and resets new ones', async () => {
    proxy = await startProxy({ target: { port: server.port } });
    const conn = await rawConnect(proxy.port);
    sendPing(conn);
    await until(() => conn.replies.length === 1, 'ping reply in pass mode');
    const c = client(proxy.uri(server.uri));
    await timedPing(c);

    proxy.setMode('reset');
    await until(() => conn.closed, 'raw connection closed by reset');
    expect(conn.errors.map((e) => e.code)).toContain('ECONNRESET');

    // The driver's pooled connection was reset too: its next command fails fast with a network error.
    const t0 = Date.now();
    const err = await c
      .db('admin')
      .command({ ping: 1 })
      .then(
        () => null,
        (e) => e,
      );
    expect(err).not.toBeNull();
    expect(err.name).toMatch(/MongoNetworkError|MongoServerSelectionError|MongoPoolClearedError/);

    // A new connection is accepted and reset at once.
    const fresh = await rawConnect(proxy.port).catch((e) => ({ connectError: e }));
    if (!fresh.connectError) await until(() => fresh.closed, 'new connection reset');
    expect(proxy.stats().resets).toBeGreaterThanOrEqual(2);
    expect(Date.now() - t0).toBeLessThan(60_000);

    // Back to pass: a new client works again.
    proxy.setMode('pass');
    await timedPing(client(proxy.uri(server.uri)));
  });

  test('latency delays each direction and keeps order', async () => {
    proxy = await startProxy({ target: { port: server.port } });
    const c = client(proxy.uri(server.uri), 10_000);
    await timedPing(c); // connect + handshake outside the measurement
    const base = [];
    for (let i = 0; i < 5; i++) base.push(await timedPing(c));

    const latency = 150;
    proxy.setLatency(latency);
    const slow = [];
    for (let i = 0; i < 3; i++) slow.push(await timedPing(c));
    // A round trip crosses the proxy twice: request and reply are each delayed.
    // (-2 ms: Node timers round to whole milliseconds.)
    for (const ms of slow) expect(ms).toBeGreaterThanOrEqual(2 * latency - 2);
    expect(Math.min(...slow)).toBeGreaterThan(Math.max(...base));
    expect(proxy.stats().latencyMs).toBe(latency);

    // Order: pipeline pings on one connection while lowering the latency mid-stream.
    const conn = await rawConnect(proxy.port);
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(sendPing(conn));
    const pingBytes = opMsgPing(0).length;
    // Make sure the slow ones are inside the proxy before the latency drops.
    await until(() => proxy.stats().pendingBytes >= 5 * pingBytes, 'first pings queued in the proxy');
    proxy.setLatency(0);
    for (let i = 0; i < 5; i++) ids.push(sendPing(conn));
    await until(() => conn.replies.length === ids.length, 'pipelined replies');
    expect(conn.replies.map((r) => r.responseTo)).toEqual(ids);
    expect(conn.replies.every((r) => r.ok === 1)).toBe(true);
  });
});
