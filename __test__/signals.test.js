// handleSignals' order of shutdown, in-process on a real HTTP server: the
// request in flight finishes (2xx) before capture is closed, new connections
// are refused, and PM2's 'shutdown' message triggers the same path.
import { describe, it, expect } from 'vitest'
import { createRequire } from 'node:module'
import http from 'node:http'

const require = createRequire(import.meta.url)
const { handleSignals } = require('../lib/shutdown.js')
const { waitFor } = require('./helpers/wait.js')

function recorder () {
  const events = []
  const quiet = { info: (m) => events.push(`info ${m}`), warn: (m) => events.push(`warn ${m}`), error: (m) => events.push(`error ${m}`) }
  const sync = {
    logger: quiet,
    async writesSettled () { events.push('writesSettled'); return true },
    async close () { events.push('close'); return true }
  }
  return { events, sync }
}

describe('handleSignals', () => {
  it('stops the server and lets the request in flight finish before closing the sync', async () => {
    const { events, sync } = recorder()
    let release
    const gate = new Promise((resolve) => { release = resolve })
    const server = http.createServer(async (req, res) => {
      events.push('request started')
      await gate
      res.end('ok')
      events.push('request answered')
    })
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address()
    const remove = handleSignals(sync, { signals: ['SIGUSR2'], server, exit: false, beforeClose: () => events.push('beforeClose'), beforeExit: () => events.push('beforeExit') })
    try {
      const inFlight = fetch(`http://127.0.0.1:${port}/`).then((r) => r.text())
      await waitFor('the request to reach the handler', () => events.includes('request started'))
      process.kill(process.pid, 'SIGUSR2')
      await waitFor('the server to stop listening', () => !server.listening)
      expect(events).not.toContain('close')
      await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow()
      release()
      expect(await inFlight).toBe('ok')
      await waitFor('beforeExit', () => events.includes('beforeExit'))
      const order = events.filter((e) => !e.startsWith('info') && e !== 'request started')
      expect(order).toEqual(['request answered', 'beforeClose', 'writesSettled', 'close', 'beforeExit'])
    } finally {
      remove()
    }
  })

  it('reacts to PM2\'s shutdown message once and rejects a bad serverCloseTimeoutMs', async () => {
    const { events, sync } = recorder()
    const hadChannel = Boolean(process.channel)
    expect(() => handleSignals(sync, { serverCloseTimeoutMs: -1 })).toThrow(/serverCloseTimeoutMs/)
    const remove = handleSignals(sync, { signals: [], exit: false })
    try {
      process.emit('message', 'shutdown')
      process.emit('message', 'shutdown')
      // vitest's forks have an IPC channel, as PM2's processes do.
      expect(hadChannel).toBe(true)
      await waitFor('close', () => events.includes('close'))
      expect(events.filter((e) => e === 'close')).toHaveLength(1)
      expect(events.some((e) => /PM2 shutdown message received/.test(e))).toBe(true)
    } finally {
      remove()
    }
  })
})
