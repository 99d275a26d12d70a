// Test-file convenience around scripts/testbed.js. Vitest-only helper: it is ESM
// (loaded through vitest's transform) because it registers vitest hooks.
import { afterAll } from 'vitest';
import crypto from 'node:crypto';
import testbed from '../../scripts/testbed.js';

const started = [];

// Vitest ignores afterAll() called from inside a beforeAll(), so the cleanup is
// registered here, when a test file imports this module (once per file: vitest
// evaluates project modules per test file). It stops every pair the file started.
afterAll(async () => {
  const pairs = started.splice(0);
  await Promise.all(pairs.map((p) => p.stop()));
});

/**
 * Starts a local + Atlas server pair, stopped (and its temp data removed) after the file's tests.
 * Call it in a beforeAll: `beforeAll(async () => { servers = await useServers(); })`.
 * @param {object} [opts] options passed to startPair ({local: {...}, atlas: {...}})
 * @returns {Promise<{local: object, atlas: object, stop(): Promise<void>}>}
 */
export async function useServers(opts) {
  const pair = await testbed.startPair(opts);
  started.push(pair);
  return pair;
}

/**
 * A database name no other test (or earlier run) uses: `<prefix>_<time>_<random>`,
 * limited to [a-z0-9_] and 63 characters (FerretDB's limit).
 * @param {string} [prefix]
 * @returns {string}
 */
export function uniqueDbName(prefix = 'test') {
  const clean = String(prefix)
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
    .slice(0, 40);
  const suffix = `${Date.now().toString(36)}_${crypto.randomBytes(4).toString('hex')}`;
  return `${clean}_${suffix}`.slice(0, 63);
}
