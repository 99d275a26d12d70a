'use strict'
/**
 * Opt-in graceful shutdown. dualsync never installs signal handlers by
 * itself (that is the app's decision); this helper does it when asked.
 * PM2 sends SIGINT, waits `kill_timeout` (1600 ms by default), then SIGKILL:
 * set kill_timeout above drainTimeoutMs. Whatever is not drained in time
 * stays in the journal and is sent after the restart.
 */

/**
 * @param {{close: (o: {drainTimeoutMs?: number}) => Promise<boolean>, logger?: object}} sync
 * @param {{signals?: string[], drainTimeoutMs?: number, exit?: boolean, beforeExit?: () => Promise<void>|void}} [opts]
 * @returns {() => void} removes the handlers
 */
function handleSignals (sync, opts = {}) {
  const signals = opts.signals || ['SIGINT', 'SIGTERM']
  const exit = opts.exit !== false
  let closing = null
  const onSignal = (signal) => {
    if (closing) return
    closing = (async () => {
      const log = sync.logger || console
      log.info(`${signal} received: draining sync before exit`)
      let code = 0
      try {
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
  for (const s of signals) process.on(s, onSignal)
  return () => { for (const s of signals) process.off(s, onSignal) }
}

module.exports = { handleSignals }
