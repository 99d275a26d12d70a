import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.{js,mjs}'],
    // Builds FerretDB once before the workers start (see the file).
    globalSetup: ['__test__/helpers/global-setup.js'],
    // Real servers: starts, outages and drains take seconds, not milliseconds.
    testTimeout: 120_000,
    hookTimeout: 180_000,
    teardownTimeout: 60_000,
    // Forks, not threads: the native addon and the server children belong to a process.
    pool: 'forks',
    // 2-core machine: two test files at a time.
    maxWorkers: 2,
  },
});
