'use strict'
// The test bed runs "Atlas" (and the link proxy) on the café PC's own two cores; in the field
// they run elsewhere. To measure what the drain costs the app on the PC, their processes can be
// put at the lowest CPU priority: they then run on what the app and the local server leave.
// Linux only (/proc); elsewhere nothing changes and the caller reports that.

const fs = require('node:fs')
const os = require('node:os')

function stat (pid) {
  const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ')
  // own user + system, plus that of reaped children (a server's ended per-connection backends)
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) }
}

/** pids of every process whose own or an ancestor's command line holds `needle`. */
function processesOf (needle) {
  if (!fs.existsSync('/proc/self/stat')) return []
  const parent = new Map()
  const own = new Set()
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try {
      parent.set(Number(p), stat(p).ppid)
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(needle)) own.add(Number(p))
    } catch { /* the process ended meanwhile */ }
  }
  return [...parent.keys()].filter((pid) => {
    for (let p = pid, i = 0; p > 1 && i < 16; p = parent.get(p), i++) if (own.has(p)) return true
    return false
  })
}

/**
 * Lowest CPU priority (nice 19) for a test-bed server's processes (found by its data dir) and
 * any extra pids. Processes the server forks later (a backend per connection) inherit it.
 * @param {{dataDir: string}} server
 * @param {number[]} [pids]
 * @returns {number} how many processes were changed (0 where /proc is absent)
 */
function lowestPriority (server, pids = []) {
  let n = 0
  for (const pid of [...processesOf(server.dataDir), ...pids]) {
    try {
      os.setPriority(pid, 19)
      n++
    } catch { /* ended meanwhile */ }
  }
  return n
}

/** CPU ticks (user + system, 1/100 s) used so far by a server's processes; null without /proc. */
function serverTicks (server) {
  if (!fs.existsSync('/proc/self/stat')) return null
  let t = 0
  for (const pid of processesOf(server.dataDir)) {
    try { t += stat(pid).ticks } catch { /* ended */ }
  }
  return t
}

/** CPU ticks used so far by this process's threads named `name` (the engine's: 'dualsync'). */
function threadTicks (name) {
  if (!fs.existsSync('/proc/self/task')) return null
  let t = 0
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const st = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      if (st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')) !== name) continue
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ')
      t += Number(f[11]) + Number(f[12])
    } catch { /* ended */ }
  }
  return t
}

module.exports = { lowestPriority, serverTicks, threadTicks }
