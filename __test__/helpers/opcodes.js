'use strict';
/**
 * A TCP relay on 127.0.0.1 that reads the MongoDB wire protocol's message headers as they pass
 * and counts each direction's messages by opCode (2013 OP_MSG, 2012 OP_COMPRESSED, 2004
 * OP_QUERY, 1 OP_REPLY), plus the compressor ids OP_COMPRESSED messages name. Bytes are
 * forwarded unchanged: it shows what a client and a server actually agreed to send.
 */

const net = require('node:net');

const OP_COMPRESSED = 2012;
/** Compressor ids of OP_COMPRESSED (the wire protocol's numbering). */
const COMPRESSOR_NAMES = { 0: 'noop', 1: 'snappy', 2: 'zlib', 3: 'zstd' };

/** Parses whole messages out of a stream's bytes into `counts`. */
function headerReader(counts) {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 16) {
      const len = buf.readInt32LE(0);
      if (len < 16) {
        counts.malformed += 1;
        buf = Buffer.alloc(0);
        return;
      }
      if (buf.length < len) return;
      const op = buf.readInt32LE(12);
      counts.ops[op] = (counts.ops[op] || 0) + 1;
      counts.bytes += len;
      if (op === OP_COMPRESSED && len >= 25) {
        const name = COMPRESSOR_NAMES[buf.readUInt8(24)] || `id ${buf.readUInt8(24)}`;
        counts.compressors[name] = (counts.compressors[name] || 0) + 1;
      }
      buf = buf.subarray(len);
    }
  };
}

/**
 * Starts a counting relay to `target`.
 * @param {{target: {host?: string, port: number}}} opts
 * @returns {Promise<{port: number, uri(baseUri: string): string,
 *   counts(): {toServer: object, toClient: object}, close(): Promise<void>}>}
 */
async function startOpcodeRelay({ target }) {
  const fresh = () => ({ ops: {}, compressors: {}, bytes: 0, malformed: 0 });
  const counts = { toServer: fresh(), toClient: fresh() };
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.host || '127.0.0.1', port: Number(target.port) });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    const up = headerReader(counts.toServer);
    const down = headerReader(counts.toClient);
    client.on('data', (c) => {
      up(c);
      upstream.write(c);
    });
    upstream.on('data', (c) => {
      down(c);
      client.write(c);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    uri: (baseUri) => baseUri.replace(/^(mongodb:\/\/(?:[^@/]*@)?)[^/?]+/, `$1127.0.0.1:${port}`),
    counts: () => JSON.parse(JSON.stringify(counts)),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

module.exports = { startOpcodeRelay, OP_COMPRESSED };
