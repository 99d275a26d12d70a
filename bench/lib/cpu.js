'use strict'
// CPU seconds used by the two servers and by this process (JS + the engine's Rust threads),
// so a throughput figure can say where the machine's cores went.

const fs = require('node:fs')

const TICKS = 100 // USER_HZ on Linux

function procCpuSec (pid) {
  if (!pid) return null
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / TICKS // utime + stime
  } catch {
    return null
  }
}

/** @returns {{local: number|null, atlas: number|null, node: number}} cumulative CPU seconds */
function cpuSnapshot (pair) {
  const u = process.cpuUsage()
  return { local: procCpuSec(pair.local.pid), atlas: procCpuSec(pair.atlas.pid), node: (u.user + u.system) / 1e6 }
}

/** CPU seconds spent between two snapshots. */
function cpuDelta (a, b) {
  const d = (k) => (a[k] === null || b[k] === null ? null : Math.round((b[k] - a[k]) * 100) / 100)
  return { local: d('local'), atlas: d('atlas'), node: d('node') }
}

module.exports = { cpuSnapshot, cpuDelta }
