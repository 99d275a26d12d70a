// native.js as an installed package sees it: no binary at all, a platform
// package of another version, and the platform package that fits.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const root = path.join(__dirname, '..')
const { platformArchABI } = require('../scripts/platform')
const name = platformArchABI()
let work

/** A copy of the package's loader files in node_modules/dualsync of a fresh app. */
function app (extra) {
  const dir = fs.mkdtempSync(path.join(work, 'app-'))
  const pkg = path.join(dir, 'node_modules', 'dualsync')
  fs.mkdirSync(path.join(pkg, 'scripts'), { recursive: true })
  for (const f of ['native.js', 'package.json', 'scripts/platform.js']) fs.copyFileSync(path.join(root, f), path.join(pkg, f))
  if (extra) extra(path.join(dir, 'node_modules'))
  return dir
}

function load (dir) {
  const r = spawnSync(process.execPath, ['-e', `
    try { const b = require('./node_modules/dualsync/native.js'); console.log(JSON.stringify({ ok: typeof b.NativeEngine })) }
    catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`], { cwd: dir, encoding: 'utf8' })
  expect(r.status, r.stderr).toBe(0)
  return JSON.parse(r.stdout)
}

function platformPackage (version) {
  return (modules) => {
    const dir = path.join(modules, `dualsync-${name}`)
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `dualsync-${name}`, version, main: `dualsync.${name}.node` }))
    fs.copyFileSync(path.join(root, `dualsync.${name}.node`), path.join(dir, `dualsync.${name}.node`))
  }
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-loader-'))
})
afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

describe('native.js loader', () => {
  it('without a binary fails with ERR_SYNC_NO_BINARY naming the platform package it looked for', () => {
    const out = load(app())
    expect(out.code).toBe('ERR_SYNC_NO_BINARY')
    expect(out.message).toContain(`${process.platform}-${process.arch}`)
    expect(out.message).toContain(`dualsync-${name}: not installed`)
    expect(out.message).toContain('--omit=optional')
  })

  it('refuses a platform package of another version and says so', () => {
    const out = load(app(platformPackage('0.0.1')))
    expect(out.code).toBe('ERR_SYNC_NO_BINARY')
    expect(out.message).toContain('version 0.0.1 is installed but dualsync')
  })

  it('loads the platform package of its own version', () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
    expect(load(app(platformPackage(version)))).toEqual({ ok: 'function' })
  })
})
