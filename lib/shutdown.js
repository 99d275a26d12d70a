'use strict'
/**
 * Opt-in graceful shutdown. dualsync never installs signal handlers by
 * itself (that is the app's decision); this helper does it when asked.
 *
 * Order, so that every write the app acknowledged is journaled:
 * 1. stop the app's HTTP server(s): no new requests; requests in flight finish
 *    (idle keep-alive sockets are closed; bounded by serverCloseTimeoutMs);
 * 2. beforeClose (the app stops its own background writers), then wait for
 *    capture hooks still running (writes in progress), bounded;
 * 3. close(): drain up to drainTimeoutMs — the engine keeps journaling marks
 *    while it drains, and what is not sent stays in the journal;
 * 4. beforeExit, then process.exit.
 *
 * PM2 sends SIGINT (on Windows: the 'shutdown' message), waits `kill_timeout`
 * (1600 ms by default), then SIGKILL: set kill_timeout above
 * serverCloseTimeoutMs + drainTimeoutMs. Even a SIGKILL loses nothing that was
 * journaled; it only leaves more for the next start to send.
 */

const DEFAULT_SERVER_CLOSE_MS = 10000

/**
 * @typedef {object} ShutdownOptions
 * @property {string[]} [signals] default ['SIGINT', 'SIGTERM']
 * @property {import('node:http').Server|import('node:http').Server[]} [server] HTTP server(s) to stop first
 * @property {number} [serverCloseTimeoutMs] bound on waiting for requests in flight (default 10000)
 * @property {number} [drainTimeoutMs] passed to close() (default SYNC_SHUTDOWN_DRAIN_MS)
 * @property {boolean} [exit] call process.exit when done (default true)
 * @property {boolean} [pm2Message] also react to PM2's `'shutdown'` message (default true)
 * @property {() => Promise<void>|void} [beforeClose] runs after the server stopped, before the wait for writes (stop the app's own timers/background writers here)
 * @property {() => Promise<void>|void} [beforeExit] runs after the drain (e.g. mongoose.disconnect())
 */

/**
 * Stops a server: no new connections, idle ones closed, resolves once every
 * request in flight finished or after `timeoutMs` (then the rest are cut).
 * @param {import('node:http').Server} server
 * @param {number} timeoutMs
 * @returns {Promise<boolean>} false when requests were cut at the bound
 */
function stopServer (server, timeoutMs) {
  return new Promise((resolve) => {
    if (!server || typeof server.close !== 'function' || server.listening === false) return resolve(true)
    let done = false
    const timer = setTimeout(() => {
      if (done) return
      done = true
      if (typeof server.closeAllConnections === 'function') server.closeAllConnections()
      resolve(false)
    }, timeoutMs)
    server.close(() => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve(true)
    })
    // Keep-alive sockets with no request would hold close() open until they time out: close
    // the idle ones now and, as requests in flight get answered, theirs too.
    if (typeof server.closeIdleConnections === 'function') {
      server.closeIdleConnections()
      const sweep = setInterval(() => server.closeIdleConnections(), 50)
      server.once('close', () => clearInterval(sweep))
      sweep.unref()
    }
  })
}

/**
 * @param {{close: (o: {drainTimeoutMs?: number}) => Promise<boolean>, writesSettled?: (ms: number) => Promise<boolean>, logger?: object}} sync
 * @param {ShutdownOptions} [opts]
 * @returns {() => void} removes the handlers
 */
function handleSignals (sync, opts = {}) {
  const signals = opts.signals || ['SIGINT', 'SIGTERM']
  const exit = opts.exit !== false
  const servers = opts.server ? [].concat(opts.server) : []
  const serverMs = opts.serverCloseTimeoutMs === undefined ? DEFAULT_SERVER_CLOSE_MS : opts.serverCloseTimeoutMs
  if (!Number.isFinite(serverMs) || serverMs < 0) {
    throw new TypeError(`handleSignals: serverCloseTimeoutMs must be a non-negative number of milliseconds, got ${String(opts.serverCloseTimeoutMs)}`)
  }
  let closing = null
  const shutdown = (why) => {
    if (closing) return
    closing = (async () => {
      const log = sync.logger || console
      log.info(`${why} received: stopping${servers.length ? ' the HTTP server,' : ''} then draining sync before exit`)
      let code = 0
      try {
        const stopped = await Promise.all(servers.map((s) => stopServer(s, serverMs)))
        if (stopped.includes(false)) log.warn(`requests still running after ${serverMs} ms were cut`)
        if (opts.beforeClose) await opts.beforeClose()
        if (typeof sync.writesSettled === 'function' && !(await sync.writesSettled(serverMs))) {
          log.warn('capture hooks still running at shutdown; their writes are covered by journaled intents')
        }
        const drained = await sync.close({ drainTimeoutMs: opts.drainTimeoutMs })
        log.info(drained ? 'sync drained' : 'sync backlog kept in the journal for the next start')
        if (opts.beforeExit) await opts.beforeExit()
      } catch (e) {
        log.error(`shutdown failed: ${e && e.message}`)
        code = 1
      }
      if (exit) process.exit(code)
    })()
  }
  const onSignal = (signal) => shutdown(signal)
  // PM2 on Windows cannot send signals: it sends this message instead.
  const onMessage = (m) => { if (m === 'shutdown') shutdown('PM2 shutdown message') }
  for (const s of signals) process.on(s, onSignal)
  const pm2 = opts.pm2Message !== false && Boolean(process.channel)
  // Only with an IPC channel (PM2 has one); the listener keeps that channel referenced until removed.
  if (pm2) process.on('message', onMessage)
  return () => {
    for (const s of signals) process.off(s, onSignal)
    if (pm2) process.off('message', onMessage)
  }
}

module.exports = { handleSignals, stopServer }
