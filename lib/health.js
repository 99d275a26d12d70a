'use strict'
/**
 * Health from a metrics snapshot. Defaults come from the users' deployment
 * guide: backlog > 1000, failure rate > 5 %, dead letters > 0 or lag > 60 s
 * → degraded; Atlas unreachable for more than 5 minutes → unhealthy.
 * Marks that could not be journaled (until their reconcile is queued) and a
 * capture hook failure in the last 5 minutes → degraded.
 */

/** A failed capture keeps health degraded this long (then the count remains in metrics). */
const HOOK_ERROR_WINDOW_MS = 5 * 60 * 1000

/**
 * @param {object} m metrics() snapshot
 * @param {object} cfg thresholds (healthMaxBacklog, healthMaxFailureRate, healthMaxLagMs, healthMaxDeadLetters, healthAtlasDownMs)
 * @param {number} [now]
 * @returns {{status: 'healthy'|'degraded'|'unhealthy', reasons: string[], checkedAt: string}}
 */
function evaluateHealth (m, cfg, now = Date.now()) {
  const degraded = []
  const unhealthy = []
  if (m.state === 'closed') unhealthy.push('sync engine is closed')
  const backlog = m.backlog ? m.backlog.total : 0
  if (backlog > cfg.healthMaxBacklog) degraded.push(`backlog ${backlog} > ${cfg.healthMaxBacklog}`)
  const failureRate = 1 - (typeof m.successRate === 'number' ? m.successRate : 1)
  if (failureRate > cfg.healthMaxFailureRate) {
    degraded.push(`failure rate ${(failureRate * 100).toFixed(1)}% > ${(cfg.healthMaxFailureRate * 100).toFixed(1)}%`)
  }
  if ((m.deadLetters || 0) > cfg.healthMaxDeadLetters) degraded.push(`${m.deadLetters} dead letter(s)`)
  const lag = Math.max(m.oldestPendingAgeMs || 0, 0)
  if (lag > cfg.healthMaxLagMs) degraded.push(`oldest pending write is ${Math.round(lag / 1000)} s old (> ${Math.round(cfg.healthMaxLagMs / 1000)} s)`)
  if (m.state === 'paused') degraded.push('sync is paused')
  if (m.state === 'closing') degraded.push('sync engine is closing (draining before exit)')
  const lost = m.lostMarks || {}
  if (lost.reconcilePending && lost.reconcilePending.length) {
    degraded.push(`${lost.count} mark(s) could not be journaled (${lost.lastError || 'journal write failed'}); reconcile of ${lost.reconcilePending.join(', ')} queued once the journal takes writes again`)
  }
  const hook = m.lastHookError
  if (hook && now - Date.parse(hook.at) < HOOK_ERROR_WINDOW_MS) {
    degraded.push(`capture hook failed ${Math.round((now - Date.parse(hook.at)) / 1000)} s ago (${m.hookErrors} in total): ${hook.message}`)
  }
  const atlas = m.atlas || {}
  if (!atlas.connected) {
    const since = atlas.since ? Date.parse(atlas.since) : now
    const downMs = now - since
    const reason = `Atlas unreachable for ${Math.round(downMs / 1000)} s`
    if (downMs > cfg.healthAtlasDownMs) unhealthy.push(reason)
    else degraded.push(reason)
  }
  const status = unhealthy.length ? 'unhealthy' : degraded.length ? 'degraded' : 'healthy'
  return { status, reasons: [...unhealthy, ...degraded], checkedAt: new Date(now).toISOString() }
}

module.exports = { evaluateHealth }
