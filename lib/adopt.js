'use strict'
/**
 * Adoption of orphaned instance journals. PM2 gives each cluster instance its
 * own dir (`<root>/instance-N`); after scaling down, or when PM2 renumbers,
 * some dirs have no process any more and their backlog would wait for a
 * manual `dualsync drain`. Every running engine looks at the sibling dirs on
 * a timer: the data-dir lock is the arbiter (a live instance holds its own,
 * so opening it fails at once and the dir is left alone; if its instance
 * comes back while we drain, it waits for the lock like a reload does).
 * A free dir with a backlog is opened with a second engine, drained, its dead
 * letters moved into our own journal (re-sent, and dead-lettered here if
 * still refused), and closed. A dir that cannot be drained now (Atlas down)
 * is closed with its backlog intact and tried again on the next tick.
 */

const fs = require('node:fs')
const path = require('node:path')
const { BSON } = require('bson')
const { isLocked } = require('./open')
const { K } = require('./wire')

const INSTANCE_DIR = /^instance-\d+$/

/** Drains sibling instance dirs no process holds, one pass per `tick()`; see the file comment. */
class Adopter {
  /**
   * @param {object} opts
   * @param {string} opts.root data root holding the `instance-N` dirs
   * @param {string} opts.self our own data dir (never adopted)
   * @param {(dir: string) => object} opts.open opens a NativeEngine on a dir (throws when locked)
   * @param {(encoded: object[]) => number} opts.enqueue journals encoded marks in our engine
   * @param {object} opts.logger
   * @param {number} opts.sliceMs longest one adoption drains before handing the dir back (shorter
   *   than SYNC_LOCK_WAIT_MS, so the dir's own instance coming back never times out waiting for us)
   */
  constructor ({ root, self, open, enqueue, logger, sliceMs }) {
    this.sliceMs = sliceMs
    this.root = root
    this.self = path.resolve(self)
    this.open = open
    this.enqueue = enqueue
    this.logger = logger
    this.running = null
    this.current = null
    this.stopped = false
    this.liveSiblings = 0
    this.adopted = 0
    // dir → file signature when last seen empty: unchanged files need no second engine.
    this.clean = new Map()
  }

  /** Dirs that look like another instance's data dir. */
  candidates () {
    let names
    try {
      names = fs.readdirSync(this.root, { withFileTypes: true })
    } catch {
      return []
    }
    return names
      .filter((d) => d.isDirectory() && INSTANCE_DIR.test(d.name))
      .map((d) => path.join(this.root, d.name))
      .filter((dir) => path.resolve(dir) !== this.self && fs.existsSync(path.join(dir, 'journal')))
  }

  /** One pass over the siblings; never throws, never runs twice at once. */
  tick () {
    if (this.running || this.stopped) return this.running
    this.running = this._pass().catch((e) => {
      this.lastError = e.message
      this.logger.error(`adopting orphaned instance journals failed: ${e.message}`)
    }).finally(() => { this.running = null })
    return this.running
  }

  async _pass () {
    let live = 0
    for (const dir of this.candidates()) {
      if (this.stopped) return
      if (this.clean.get(dir) === signature(dir)) continue
      let engine
      try {
        engine = this.open(dir)
      } catch (e) {
        if (isLocked(e)) live++
        else this.logger.error(`cannot open ${dir} to drain it: ${e.message}`)
        continue
      }
      this.current = engine
      let empty = false
      try {
        empty = await this._drain(dir, engine)
      } catch (e) {
        this.logger.error(`draining ${dir} failed: ${e.message}`)
      } finally {
        this.current = null
        await engine.close(0)
      }
      if (empty) this.clean.set(dir, signature(dir))
      else this.clean.delete(dir)
    }
    this.liveSiblings = live
  }

  async _drain (dir, engine) {
    const m = engine.metrics()
    const dead = engine.deadLetters(null)
    if (m.backlog.total === 0 && dead.length === 0) return true
    this.logger.info(`adopting the journal of ${dir} (no process holds it): ${m.backlog.total} pending mark(s), ${dead.length} dead letter(s)`)
    const drained = m.backlog.total === 0 || await engine.flush(this.sliceMs)
    if (!drained) {
      this.logger.warn(`${dir}: not drained within ${this.sliceMs} ms; its backlog stays in its journal for the next try`)
      return false
    }
    // Dead letters (older ones and any made while draining) move to our
    // journal before they leave that dir's store, so a crash in between only
    // duplicates them.
    const entries = engine.deadLetters(null)
    if (entries.length) {
      this.enqueue(entries.map(markOfDeadLetter))
      engine.takeDeadLetters(null)
    }
    this.adopted++
    this.logger.info(`✓ adopted ${dir}: drained${entries.length ? `, ${entries.length} dead letter(s) moved here to be retried` : ''}`)
    return true
  }

  /** Stops adopting; an adoption in progress hands its dir back at once (backlog kept). */
  async stop () {
    this.stopped = true
    const engine = this.current
    this.current = null
    if (engine) await engine.close(0)
  }
}

/**
 * Names, sizes and times of a dir's journal files and dead letters (not LOCK, which every
 * opener rewrites): any write by a returning instance changes it.
 */
function signature (dir) {
  const parts = []
  for (const sub of ['journal', '.']) {
    let names = []
    try {
      names = fs.readdirSync(path.join(dir, sub))
    } catch { /* gone meanwhile */ }
    for (const name of names.sort()) {
      if (name === 'LOCK' || name === 'journal') continue
      try {
        const st = fs.statSync(path.join(dir, sub, name))
        parts.push(`${sub}/${name}:${st.size}:${st.mtimeMs}`)
      } catch { /* gone meanwhile */ }
    }
  }
  return parts.join('|')
}

/** A dead-letter entry as an encoded mark (`_id` kept with its BSON type). */
function markOfDeadLetter (d) {
  const id = BSON.EJSON.deserialize({ _id: d.id }, { relaxed: false })
  return { c: d.collection, d: d.db, k: K.BSON, v: Buffer.from(BSON.serialize(id)) }
}

module.exports = { Adopter, markOfDeadLetter }
