'use strict'
/**
 * dualsync public API. See index.d.ts for the typed surface and README.md
 * for usage. `createSync(options)` returns a Sync: a Mongoose plugin, an
 * enqueue for raw writes, metrics/health, flush/close and admin helpers.
 */
const { loadConfig, ConfigError } = require('./lib/config')
const { createLogger } = require('./lib/logger')
const { Sync, DisabledSync } = require('./lib/sync')

/**
 * Creates the sync engine (or a no-op when SYNC_ENABLED=false).
 * @param {import('./index').SyncOptions} [options] overrides the env vars
 * @returns {Promise<import('./index').Sync>}
 */
async function createSync (options = {}) {
  const cfg = loadConfig(options)
  const logger = createLogger(cfg.logger, cfg.logLevel, [cfg.localUri, cfg.atlasUri])
  if (!cfg.enabled) {
    logger.info('Sync disabled by configuration')
    return new DisabledSync(cfg)
  }
  const sync = new Sync(cfg, logger)
  await sync._start()
  return sync
}

module.exports = { createSync, ConfigError }
