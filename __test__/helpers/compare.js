'use strict';
/**
 * Proves convergence: compares a database on "local" and "Atlas" document by
 * document, by the raw BSON bytes of each document (so a field order change,
 * an int32 that became a double, or a lost field all count as different).
 */

const { MongoClient, BSON } = require('mongodb');

const SHOW_IDS = 5;

/** Canonical string for an _id, distinguishing BSON types (1 vs 1.0 vs "1"). */
function idKey(raw) {
  const { _id } = BSON.deserialize(raw, { promoteValues: false });
  return BSON.EJSON.stringify({ _id }, { relaxed: false });
}

/** Readable _id value from its key (ObjectId, string, number...). */
function idValue(key) {
  return BSON.EJSON.parse(key, { relaxed: true })._id;
}

async function collectionNames(db) {
  const list = await db.listCollections({}, { nameOnly: true }).toArray();
  return list.map((c) => c.name).filter((n) => !n.startsWith('system.'));
}

async function withClient(uriOrClient, fn) {
  if (uriOrClient instanceof MongoClient) return fn(uriOrClient);
  const client = new MongoClient(uriOrClient, { serverSelectionTimeoutMS: 10_000 });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

// Both sides are read in `_id` order: DocumentDB's streaming cursor for an unsorted find can
// list a document twice across getMore batches (measured: a find() of a 150-document collection
// returned 171, while countDocuments, a sorted find and a single-batch find all saw 150).
const BY_ID = { raw: true, sort: { _id: 1 } };

async function compareCollection(localColl, atlasColl, name) {
  // Hold one side in memory, stream the other against it.
  const local = new Map();
  const listedTwice = [];
  for await (const raw of localColl.find({}, BY_ID)) {
    const key = idKey(raw);
    if (local.has(key)) listedTwice.push(`local ${key}`);
    local.set(key, raw);
  }
  const result = { collection: name, localCount: local.size, atlasCount: 0, missing: [], extra: [], different: [], listedTwice };
  const seen = new Set();
  for await (const raw of atlasColl.find({}, BY_ID)) {
    const key = idKey(raw);
    if (seen.has(key)) {
      listedTwice.push(`atlas ${key}`);
      continue;
    }
    seen.add(key);
    result.atlasCount += 1;
    const mine = local.get(key);
    if (!mine) result.extra.push(idValue(key));
    else {
      if (!Buffer.from(mine).equals(Buffer.from(raw))) result.different.push(idValue(key));
      local.delete(key);
    }
  }
  for (const key of local.keys()) result.missing.push(idValue(key));
  return result;
}

/**
 * Compares `dbName` on both servers.
 * @param {string|MongoClient} localUri  local server URI (or a connected client)
 * @param {string|MongoClient} atlasUri  Atlas server URI (or a connected client)
 * @param {string} dbName
 * @param {string[]} [collections] default: every non-system collection on either side
 * @returns {Promise<Array<{collection: string, localCount: number, atlasCount: number,
 *   missing: any[], extra: any[], different: any[]}>>} missing = on local only, extra = on Atlas only,
 *   different = same _id, different bytes
 */
async function compareDatabases(localUri, atlasUri, dbName, collections) {
  if (!dbName) throw new Error('compareDatabases: dbName is required');
  return withClient(localUri, (lc) =>
    withClient(atlasUri, async (ac) => {
      const ldb = lc.db(dbName);
      const adb = ac.db(dbName);
      let names = collections;
      if (!names) {
        const both = new Set([...(await collectionNames(ldb)), ...(await collectionNames(adb))]);
        names = [...both].sort();
      }
      const out = [];
      for (const name of names) out.push(await compareCollection(ldb.collection(name), adb.collection(name), name));
      return out;
    }),
  );
}

function fmtIds(ids) {
  const shown = ids.slice(0, SHOW_IDS).map((id) => BSON.EJSON.stringify(id, { relaxed: true }));
  return `[${shown.join(', ')}${ids.length > SHOW_IDS ? `, ... ${ids.length - SHOW_IDS} more` : ''}]`;
}

/**
 * Throws a readable error unless every compared collection is identical on both sides.
 * @param {Array|object} result what compareDatabases returned (or one entry of it)
 */
function assertConverged(result) {
  const entries = Array.isArray(result) ? result : [result];
  const problems = [];
  for (const r of entries) {
    const parts = [];
    if (r.missing.length) parts.push(`missing on Atlas ${r.missing.length} ${fmtIds(r.missing)}`);
    if (r.extra.length) parts.push(`extra on Atlas ${r.extra.length} ${fmtIds(r.extra)}`);
    if (r.different.length) parts.push(`different ${r.different.length} ${fmtIds(r.different)}`);
    // A server listing one document twice is a test-bed fault, named as such (not as "extra").
    if (r.listedTwice && r.listedTwice.length) parts.push(`listed twice by the server's cursor ${r.listedTwice.length}: ${r.listedTwice.slice(0, SHOW_IDS).join(', ')}`);
    if (parts.length || r.localCount !== r.atlasCount) {
      problems.push(`  ${r.collection} (local ${r.localCount} docs, atlas ${r.atlasCount}): ${parts.join('; ')}`);
    }
  }
  if (problems.length) throw new Error(`local and Atlas have not converged:\n${problems.join('\n')}`);
}

module.exports = { compareDatabases, assertConverged };
