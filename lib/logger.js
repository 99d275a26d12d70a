'use strict'
/** Adapts the app's logger (console, pino, winston...) with a level filter. */
const { scrub } = require('./redact')

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 }

/**
 * @param {{debug?: Function, info?: Function, warn?: Function, error?: Function}|undefined} target
 * @param {string} level minimum level
 * @param {string[]} secrets URIs whose credentials must never be printed
 * @returns {{debug: Function, info: Function, warn: Function, error: Function, log: Function}}
 */
function createLogger (target, level = 'info', secrets = []) {
  const min = LEVELS[level] || LEVELS.info
  const out = target || console
  const log = (lvl, msg) => {
    if ((LEVELS[lvl] || LEVELS.info) < min) return
    const fn = typeof out[lvl] === 'function' ? out[lvl] : (typeof out.log === 'function' ? out.log : null)
    if (!fn) return
    const text = scrub(msg, secrets)
    try {
      fn.call(out, target ? text : `[dualsync] ${text}`)
    } catch { /* a broken logger must not break sync */ }
  }
  return {
    log,
    debug: (m) => log('debug', m),
    info: (m) => log('info', m),
    warn: (m) => log('warn', m),
    error: (m) => log('error', m)
  }
}

module.exports = { createLogger, LEVELS }
