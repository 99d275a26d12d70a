'use strict';
/**
 * FerretDB v1.24's SQLite backend indexes `_id` as `_ferretdb_sjson->"_id"`, but its UPDATE and
 * DELETE statements filter on `_ferretdb_sjson->'$._id'`, an expression SQLite does not match to
 * that index: every write by `_id` reads every row of the table (profiled: ~3.5 µs per stored
 * document per write). A drain or full sync of a few thousand documents then crawls. An index on
 * the exact expression the statements use makes writes by `_id` point writes, as on MongoDB. It
 * is invisible to FerretDB (listIndexes does not show it) and changes no data. Used by the bench
 * and by the tests that move thousands of documents; a no-op on the other engines.
 */

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const testbed = require('./testbed.js');

const SQLITE_CANDIDATES = ['/usr/bin/sqlite3', '/usr/local/bin/sqlite3'];

/** @returns {string|null} the sqlite3 CLI, if installed */
function findSqlite() {
  return SQLITE_CANDIDATES.find((p) => fs.existsSync(p)) || null;
}

/** True when repairIdIndex does something here (FerretDB engine, sqlite3 CLI present). */
function idIndexRepairAvailable() {
  return testbed.engine() === 'ferretdb' && Boolean(findSqlite());
}

/**
 * Adds the `_id` expression index to one FerretDB collection (which must exist).
 * @param {{dataDir: string}} server a test-bed server (from startServer/startPair)
 * @param {string} db
 * @param {string} coll
 * @param {{required?: boolean}} [opts] required: a missing sqlite3 CLI is an error (tests), not a skip
 * @returns {boolean} whether the index was added (false on other engines)
 */
function repairIdIndex(server, db, coll, { required = false } = {}) {
  if (testbed.engine() !== 'ferretdb') return false;
  const sqlite = findSqlite();
  if (!sqlite) {
    if (!required) return false;
    const e = new Error(`repairIdIndex: the sqlite3 CLI is needed for FerretDB's _id index repair of ${db}.${coll}; install it with: apt-get install -y sqlite3`);
    e.code = 'ERR_TESTBED_SQLITE';
    throw e;
  }
  const file = path.join(server.dataDir, `${db}.sqlite`);
  const q = (sql) => execFileSync(sqlite, ['-cmd', '.timeout 10000', file, sql], { encoding: 'utf8' }).trim();
  const table = q(`SELECT table_name FROM _ferretdb_collections WHERE name = '${coll.replace(/'/g, "''")}'`);
  if (!table) {
    const e = new Error(`repairIdIndex: no FerretDB table for ${db}.${coll} in ${file} (create the collection first)`);
    e.code = 'ERR_TESTBED_NO_TABLE';
    throw e;
  }
  q(`CREATE INDEX IF NOT EXISTS "${table}_id_expr" ON "${table}" (_ferretdb_sjson->'$._id')`);
  return true;
}

module.exports = { repairIdIndex, idIndexRepairAvailable };
