'use strict'
// What wire compression the test bed negotiates: each server's own `hello` answer to a client
// offering zstd/snappy/zlib, and the Node driver's handshake with `compressors: 'zlib'`
// checked on the wire (bytes of the same read through a proxy, with and without).

const { connect } = require('./servers')
const { startProxy } = require('../../__test__/helpers/proxy')

const OFFER = ['zstd', 'snappy', 'zlib']

function installed (name) {
  try {
    require.resolve(name)
    return true
  } catch {
    return false
  }
}

/** The `compression` list a server answers to a hello offering OFFER (null: none). */
async function helloCompression (client) {
  const r = await client.db('admin').command({ hello: 1, compression: OFFER })
  return Array.isArray(r.compression) && r.compression.length ? r.compression : null
}

/** Bytes from the server for reading `coll` (all of it) with the given driver compressors. */
async function readBytes (server, coll, compressors) {
  const proxy = await startProxy({ target: { host: '127.0.0.1', port: server.port } })
  const c = await connect(proxy.uri(server.uri), compressors ? { compressors } : {})
  try {
    const docs = await c.db(coll.dbName).collection(coll.collectionName).find({}).limit(2000).toArray()
    return { bytes: proxy.stats().bytesFromTarget, docs: docs.length }
  } finally {
    await c.close()
    await proxy.close()
  }
}

/**
 * @param {{local: object, atlas: object}} pair
 * @param {import('mongodb').Collection} coll a local collection with documents in it
 * @returns {Promise<{rows: string[][], summary: string, local: any, atlas: any, zlibWireRatio: number}>}
 */
async function compressionReport (pair, coll) {
  const answers = {}
  for (const side of ['local', 'atlas']) {
    const c = await connect(pair[side].uri)
    try {
      answers[side] = await helloCompression(c)
    } catch (e) {
      answers[side] = `hello failed: ${e.message}`
    } finally {
      await c.close()
    }
  }
  const plain = await readBytes(pair.local, coll, null)
  const zlib = await readBytes(pair.local, coll, 'zlib')
  const ratio = zlib.bytes / plain.bytes
  const rows = [
    ['local server hello, offered zstd, snappy, zlib', answers.local ? JSON.stringify(answers.local) : 'no compression field (none accepted)'],
    ['"Atlas" server hello, offered zstd, snappy, zlib', answers.atlas ? JSON.stringify(answers.atlas) : 'no compression field (none accepted)'],
    [`Node driver compressors: 'zlib', read of ${plain.docs} docs`, `${zlib.bytes} B on the wire vs ${plain.bytes} B without (${(ratio * 100).toFixed(0)} %): ${ratio < 0.9 ? 'compressed' : 'not compressed'}`],
    ['driver packages for zstd / snappy', `@mongodb-js/zstd ${installed('@mongodb-js/zstd') ? 'installed' : 'not installed'}, snappy ${installed('snappy') ? 'installed' : 'not installed'}`]
  ]
  const summary = `local hello: ${JSON.stringify(answers.local)}, atlas hello: ${JSON.stringify(answers.atlas)}, driver zlib on the wire ${(ratio * 100).toFixed(0)} % of plain`
  return { rows, summary, local: answers.local, atlas: answers.atlas, zlibWireRatio: ratio }
}

module.exports = { compressionReport, helloCompression }
