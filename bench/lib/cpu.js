'use strict'
// CPU seconds used by the two servers and by this process (JS + the engine's Rust threads),
// so a throughput figure can say where the machine's cores went.

const fs = require('node:fs')

const TICKS = 100 // USER_HZ on Linux

/** /proc/<pid>/stat fields after the command name (index 0 = state, 1 = ppid, 11 = utime, ...). */
function statFields (pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null
  }
}

function procCpuSec (pid) {
  if (!pid) return null
  const f = statFields(pid)
  return f ? (Number(f[11]) + Number(f[12])) / TICKS : null // utime + stime
}

/**
 * CPU seconds of a whole server: every process whose command line names its data dir (the
 * FerretDB process; postgres and the DocumentDB gateway), their descendants (postgres
 * backends), and the children they already reaped (cutime + cstime), plus `pid`.
 * @param {{pid?: number, dataDir?: string}} server
 */
function serverCpuSec (server) {
  if (!server.dataDir) return procCpuSec(server.pid)
  let pids
  try {
    pids = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number)
  } catch {
    return procCpuSec(server.pid)
  }
  const parent = new Map()
  const fields = new Map()
  for (const p of pids) {
    const f = statFields(p)
    if (!f) continue
    fields.set(p, f)
    parent.set(p, Number(f[1]))
  }
  const roots = new Set(server.pid ? [server.pid] : [])
  for (const p of fields.keys()) {
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(server.dataDir)) roots.add(p)
    } catch { /* gone */ }
  }
  let sec = 0
  let any = false
  for (const [p, f] of fields) {
    let q = p
    while (q > 1 && !roots.has(q)) q = parent.get(q) || 0
    if (!roots.has(q)) continue
    any = true
    sec += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICKS
  }
  return any ? sec : null
}

/** @returns {{local: number|null, atlas: number|null, node: number}} cumulative CPU seconds */
function cpuSnapshot (pair) {
  const u = process.cpuUsage()
  return { local: serverCpuSec(pair.local), atlas: serverCpuSec(pair.atlas), node: (u.user + u.system) / 1e6 }
}

/** CPU seconds spent between two snapshots. */
function cpuDelta (a, b) {
  const d = (k) => (a[k] === null || b[k] === null ? null : Math.round((b[k] - a[k]) * 100) / 100)
  return { local: d('local'), atlas: d('atlas'), node: d('node') }
}

/**
 * CPU seconds per second a server's process tree spends with no client work (background
 * workers, checkpoints, timers), measured over `ms`, so a per-document figure can leave it out.
 * @returns {Promise<number|null>}
 */
async function idleCpuRate (server, ms) {
  const a = serverCpuSec(server)
  const t0 = performance.now()
  await new Promise((resolve) => setTimeout(resolve, ms))
  const b = serverCpuSec(server)
  return a === null || b === null ? null : Math.max(0, b - a) / ((performance.now() - t0) / 1000)
}

module.exports = { cpuSnapshot, cpuDelta, serverCpuSec, idleCpuRate }
