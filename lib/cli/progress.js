'use strict'
/** Progress line for long jobs: a bar on a TTY, nothing otherwise. */

function fmtDuration (ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '?'
  const s = Math.round(ms / 1000)
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`
}

/**
 * One progress line for a job snapshot.
 * @param {object} snap job snapshot
 * @param {number} [width] bar width
 * @returns {string}
 */
function renderJobLine (snap, width = 24) {
  const total = Math.max(snap.docsEstimated || 0, snap.docsScanned || 0, 1)
  const frac = Math.min(1, (snap.docsScanned || 0) / total)
  const filled = Math.round(frac * width)
  const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`
  const coll = snap.currentCollection ? ` ${snap.currentCollection}` : ''
  return `${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${snap.docsScanned}/${snap.docsEstimated} docs` +
    ` · ${snap.collectionsDone}/${snap.collectionsTotal} collections${coll}` +
    ` · ${Math.round(snap.ratePerSec || 0)}/s · ETA ${fmtDuration(snap.etaMs)} · ${snap.differences} differences`
}

/**
 * Starts redrawing a job's progress on a TTY stream until stop().
 * @param {{snapshot: () => object}} job
 * @param {NodeJS.WriteStream} stream
 * @returns {{stop: () => void}}
 */
function showProgress (job, stream) {
  if (!stream.isTTY) return { stop () {} }
  const draw = () => stream.write(`\r\x1b[2K${renderJobLine(job.snapshot())}`)
  draw()
  const timer = setInterval(draw, 250)
  return {
    stop () {
      clearInterval(timer)
      draw()
      stream.write('\n')
    }
  }
}

module.exports = { renderJobLine, showProgress, fmtDuration }
