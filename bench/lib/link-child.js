'use strict'
// The shaped link in its own process (bench/lib/link.js `startLinkProcess`): the café
// workload of `catchup` must not share its event loop with the proxy that models the
// internet between the café and Atlas. Talks to its parent over IPC:
//   parent → { target, profile } once, then { op: 'stats' } or { op: 'close' }
//   child  → { ready: port }, { stats } per request, { error } on failure

const { startProxy } = require('../../__test__/helpers/proxy')
const { shape } = require('./link')

let proxy = null
process.on('message', async (msg) => {
  try {
    if (msg.target) {
      proxy = await startProxy({ target: msg.target })
      shape(proxy, msg.profile)
      process.send({ ready: proxy.port })
    } else if (msg.op === 'stats') {
      process.send({ stats: proxy.stats() })
    } else if (msg.op === 'close') {
      await proxy.close()
      process.disconnect()
    }
  } catch (e) {
    process.send({ error: e.message })
  }
})
// the parent died: nothing else would stop this process
process.on('disconnect', () => process.exit(0))
