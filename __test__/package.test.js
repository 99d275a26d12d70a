// As a new user would: pack the main package and the linux-x64-gnu platform
// package (`npm run pack:platforms`), install them into a fresh app next to
// mongoose and express, run a short script that syncs a write, and check the
// document on Atlas. The other platforms: scripts/test-platforms.js.
import { describe, it, expect, beforeAll } from 'vitest'
import { createRequire } from 'node:module'
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { MongoClient } = require('mongodb')
const { pack } = require('../scripts/pack-platforms')
let servers

beforeAll(async () => {
  servers = await useServers()
})

const APP = `
const mongoose = require('mongoose')
const express = require('express')
const { createSync } = require('dualsync')
async function main () {
  const sync = await createSync({ enabled: true, localUri: process.env.LOCAL, atlasUri: process.env.ATLAS, dataDir: process.env.DIR, workerInterval: 0, adminToken: 't' })
  mongoose.plugin(sync.plugin)
  const Bill = mongoose.model('Bill', new mongoose.Schema({ table: Number, total: Number }))
  await mongoose.connect(process.env.LOCAL)
  const app = express()
  app.use('/api/sync', sync.router())
  const bill = await Bill.create({ table: 7, total: 12 })
  await Bill.updateOne({ _id: bill._id }, { $inc: { total: 3 } })
  const ok = await sync.flush({ timeoutMs: 30000 })
  console.log(JSON.stringify({ ok, id: String(bill._id), typeofRouter: typeof app }))
  await sync.close()
  await mongoose.disconnect()
}
main().catch((e) => { console.error(e); process.exit(1) })
`

describe('the npm package', () => {
  it('packs, installs into a fresh app and syncs a write', async () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-pkg-'))
    const tarballs = pack({ dest: work, platforms: ['linux-x64-gnu'] })
    const tarball = tarballs.main
    expect(fs.existsSync(tarball)).toBe(true)
    // The main package ships no binary; the platform package does.
    const listing = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' })
    expect(listing).not.toMatch(/\.node\n/)
    expect(JSON.parse(execFileSync('tar', ['xzfO', tarball, 'package/package.json'], { encoding: 'utf8' })).optionalDependencies).toHaveProperty('dualsync-linux-x64-gnu')
    const app = path.join(work, 'app')
    fs.mkdirSync(app)
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'cafe-app', version: '1.0.0', private: true }))
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', tarball, tarballs.platforms['linux-x64-gnu'], 'mongoose@9', 'express@5'], { cwd: app, encoding: 'utf8' })
    expect(install.status, install.stderr).toBe(0)
    const installed = JSON.parse(fs.readFileSync(path.join(app, 'node_modules', 'dualsync', 'package.json'), 'utf8'))
    expect(installed.peerDependencies).toHaveProperty('mongoose')
    expect(fs.existsSync(path.join(app, 'node_modules', 'dualsync-linux-x64-gnu', 'dualsync.linux-x64-gnu.node'))).toBe(true)
    fs.writeFileSync(path.join(app, 'index.js'), APP)
    const db = uniqueDbName('pkg')
    const run = spawnSync(process.execPath, ['index.js'], {
      cwd: app,
      encoding: 'utf8',
      env: { ...process.env, LOCAL: `${servers.local.uri}/${db}`, ATLAS: `${servers.atlas.uri}/${db}`, DIR: path.join(work, 'data') },
      timeout: 120000
    })
    expect(run.status, run.stderr).toBe(0)
    const out = JSON.parse(run.stdout.split('\n').find((l) => l.startsWith('{')))
    expect(out.ok).toBe(true)
    const atlas = new MongoClient(servers.atlas.uri)
    try {
      const docs = await atlas.db(db).collection('bills').find().toArray()
      expect(docs).toHaveLength(1)
      expect(String(docs[0]._id)).toBe(out.id)
      expect(docs[0].total).toBe(15)
    } finally {
      await atlas.close()
    }
    fs.rmSync(work, { recursive: true, force: true })
  }, 300_000)
})
