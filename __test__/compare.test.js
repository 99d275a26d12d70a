// Proves the convergence checker sees every kind of divergence, on real servers.
import { beforeAll, describe, expect, test } from 'vitest';
import { BSON, MongoClient } from 'mongodb';
import { useServers, uniqueDbName } from './helpers/servers.js';
import { assertConverged, compareDatabases } from './helpers/compare.js';

const { ObjectId, Double, Int32 } = BSON;

let servers;
let local;
let atlas;

beforeAll(async () => {
  servers = await useServers();
  local = new MongoClient(servers.local.uri);
  atlas = new MongoClient(servers.atlas.uri);
  return async () => {
    await local.close();
    await atlas.close();
  };
});

async function seed(client, dbName, coll, docs) {
  if (docs.length) await client.db(dbName).collection(coll).insertMany(docs);
}

describe('compareDatabases', () => {
  test('identical databases converge', async () => {
    const db = uniqueDbName('cmp_same');
    const docs = [
      { _id: new ObjectId(), name: 'a', at: new Date(1700000000000), tags: ['x', 'y'], sub: { n: 1 } },
      { _id: 'str-id', n: new Int32(5) },
      { _id: 42, f: new Double(1.5) },
    ];
    await seed(local, db, 'items', docs);
    await seed(atlas, db, 'items', docs);
    const res = await compareDatabases(servers.local.uri, servers.atlas.uri, db);
    expect(res).toEqual([
      { collection: 'items', localCount: 3, atlasCount: 3, missing: [], extra: [], different: [], listedTwice: [] },
    ]);
    expect(() => assertConverged(res)).not.toThrow();
  });

  test('detects missing, extra and different documents, including field order', async () => {
    const db = uniqueDbName('cmp_diff');
    const oid = new ObjectId();
    await seed(local, db, 'items', [
      { _id: 1, a: 1, b: 2 }, // same
      { _id: 2, a: 1 }, // missing on Atlas
      { _id: 3, a: 'new' }, // different value
      { _id: 4, a: 1, b: 2 }, // same fields, other order on Atlas
      { _id: 5, n: new Int32(1) }, // int32 here, double on Atlas
      { _id: oid, gone: false }, // missing on Atlas, ObjectId key
    ]);
    await seed(atlas, db, 'items', [
      { _id: 1, a: 1, b: 2 },
      { _id: 3, a: 'old' },
      { _id: 4, b: 2, a: 1 },
      { _id: 5, n: new Double(1) },
      { _id: '1', a: 1, b: 2 }, // string "1" is not the number 1: extra
      { _id: 9, stale: true }, // extra
    ]);
    const [res] = await compareDatabases(servers.local.uri, servers.atlas.uri, db);
    expect(res.collection).toBe('items');
    expect(res.localCount).toBe(6);
    expect(res.atlasCount).toBe(6);
    expect(res.missing).toHaveLength(2);
    expect(res.missing).toContain(2);
    expect(res.missing.find((id) => id instanceof ObjectId)?.equals(oid)).toBe(true);
    expect([...res.extra].sort()).toEqual(['1', 9].sort());
    expect([...res.different].sort()).toEqual([3, 4, 5]);

    let message = '';
    try {
      assertConverged(res);
    } catch (err) {
      message = err.message;
    }
    expect(message).toMatch(/not converged/);
    expect(message).toMatch(/items \(local 6 docs, atlas 6\)/);
    expect(message).toMatch(/missing on Atlas 2 \[.*2/);
    expect(message).toContain(oid.toHexString());
    expect(message).toMatch(/extra on Atlas 2 \[.*"1"/);
    expect(message).toMatch(/different 3 \[3, 4, 5\]/);
  });

  test('covers collections present on one side only, and honours an explicit list', async () => {
    const db = uniqueDbName('cmp_colls');
    await seed(local, db, 'onlyLocal', [{ _id: 'a' }, { _id: 'b' }]);
    await seed(atlas, db, 'onlyAtlas', [{ _id: 'z' }]);
    await seed(local, db, 'both', [{ _id: 1 }]);
    await seed(atlas, db, 'both', [{ _id: 1 }]);

    const all = await compareDatabases(servers.local.uri, servers.atlas.uri, db);
    expect(all.map((r) => r.collection)).toEqual(['both', 'onlyAtlas', 'onlyLocal']);
    const byName = Object.fromEntries(all.map((r) => [r.collection, r]));
    expect(byName.onlyLocal).toMatchObject({ localCount: 2, atlasCount: 0, missing: ['a', 'b'], extra: [] });
    expect(byName.onlyAtlas).toMatchObject({ localCount: 0, atlasCount: 1, missing: [], extra: ['z'] });
    expect(() => assertConverged(all)).toThrow(/onlyLocal[\s\S]*onlyAtlas|onlyAtlas[\s\S]*onlyLocal/);

    const some = await compareDatabases(servers.local.uri, servers.atlas.uri, db, ['both']);
    expect(some).toHaveLength(1);
    expect(() => assertConverged(some)).not.toThrow();
  });

  test('lists only the first ids of a long difference', async () => {
    const db = uniqueDbName('cmp_many');
    await seed(
      local,
      db,
      'bulk',
      Array.from({ length: 50 }, (_, i) => ({ _id: i })),
    );
    const res = await compareDatabases(servers.local.uri, servers.atlas.uri, db);
    expect(res[0].missing).toHaveLength(50);
    expect(() => assertConverged(res)).toThrow(/missing on Atlas 50 \[0, 1, 2, 3, 4, \.\.\. 45 more\]/);
  });
});
