'use strict';
// Runs once before any test file: builds/locates the test-bed engine's servers here
// (FerretDB, or DocumentDB with DUALSYNC_TESTBED=documentdb) so that parallel test
// files never build them concurrently, and a missing toolchain fails the run loudly
// instead of failing every test with the same error.
const { engine, ensureEngine } = require('../../scripts/testbed.js');

module.exports = async function setup() {
  const kind = engine(); // an unknown DUALSYNC_TESTBED value fails the run here
  try {
    // Test workers' later calls find the cached build.
    await ensureEngine();
  } catch (err) {
    throw new Error(`test bed unavailable: cannot build or find the ${kind} servers.\n${err.message}`);
  }
  process.stderr.write(`[testbed] engine: ${kind}\n`);
};
