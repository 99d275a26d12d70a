'use strict';
// Runs once before any test file: builds/locates FerretDB here so that parallel
// test files never build it concurrently, and a missing toolchain fails the run
// loudly instead of failing every test with the same error.
const { ensureFerretDB, useMongod } = require('../../scripts/testbed.js');

module.exports = async function setup() {
  if (useMongod()) return;
  try {
    // Test workers' later calls find the cached binary.
    await ensureFerretDB();
  } catch (err) {
    throw new Error(`test bed unavailable: cannot get a FerretDB binary.\n${err.message}`);
  }
};
