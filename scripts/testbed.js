#!/usr/bin/env node
'use strict';
/**
 * Test bed: real MongoDB-wire servers for dualsync's tests.
 *
 * No MongoDB server can be installed on the project's machines, so FerretDB
 * v1.24.2 (SQLite backend) plays both "local" and "Atlas". It is built from
 * its Go module on first use and cached. Where a real `mongod` exists, set
 * DUALSYNC_TESTBED=mongod (or MONGOD_BIN=/path/to/mongod) to run the same
 * tests against it.
 *
 * Module:  ensureFerretDB(), startServer(opts), startPair(opts)
 * CLI:     node scripts/testbed.js build | start | check
 *
 * Environment:
 *   DUALSYNC_CACHE_DIR   where the built binary is cached (default ~/.cache/dualsync)
 *   FERRETDB_BIN         use this FerretDB binary instead of building one
 *   DUALSYNC_TESTBED     'ferretdb' (default) or 'mongod'
 *   MONGOD_BIN           mongod binary (implies DUALSYNC_TESTBED=mongod unless that says 'ferretdb')
 *   DUALSYNC_TESTBED_START_TIMEOUT_MS  how long a server may take to answer ping (default 30000)
 */

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');

const FERRETDB_VERSION = 'v1.24.2';
const FERRETDB_MODULE = 'github.com/FerretDB/FerretDB';
const STOP_GRACE_MS = 10_000;
const STDERR_TAIL_LINES = 40;

function log(msg) {
  process.stderr.write(`[testbed] ${msg}\n`);
}

function cacheDir() {
  return process.env.DUALSYNC_CACHE_DIR || path.join(os.homedir(), '.cache', 'dualsync');
}

/** Finds an executable on PATH; returns its path or null. */
function which(cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here; keep looking
    }
  }
  return null;
}

/** Runs a command, streaming its stderr lines to `onLine`; resolves with stdout, rejects with a readable error. */
function run(cmd, args, { cwd, env, onLine } = {}) {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      reject(err);
      return;
    }
    const out = [];
    const errTail = [];
    let partial = '';
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop();
      for (const line of lines) {
        errTail.push(line);
        if (errTail.length > STDERR_TAIL_LINES) errTail.shift();
        if (onLine) onLine(line);
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (partial) errTail.push(partial);
      if (code === 0) resolve(Buffer.concat(out).toString());
      else {
        reject(
          new Error(
            `${cmd} ${args.join(' ')} failed (${signal || `exit ${code}`}):\n${errTail.join('\n')}`,
          ),
        );
      }
    });
  });
}

let ensurePromise = null;

/**
 * Returns the path of a FerretDB v1.24.2 binary, building and caching it on first use.
 * Safe to call from several processes at once: each builds into a private temp file
 * and renames it into the cache atomically.
 * @returns {Promise<string>} absolute path of the binary
 */
function ensureFerretDB() {
  if (!ensurePromise) {
    ensurePromise = buildFerretDB().catch((err) => {
      ensurePromise = null; // let a later call retry
      throw err;
    });
  }
  return ensurePromise;
}

async function buildFerretDB() {
  if (process.env.FERRETDB_BIN) {
    const bin = path.resolve(process.env.FERRETDB_BIN);
    if (!fs.existsSync(bin)) throw new Error(`FERRETDB_BIN points to a missing file: ${bin}`);
    return bin;
  }
  const dir = cacheDir();
  const target = path.join(dir, `ferretdb-${FERRETDB_VERSION}`);
  if (fs.existsSync(target)) return target;

  const go = which('go');
  if (!go) {
    throw new Error(
      `Cannot build FerretDB ${FERRETDB_VERSION}: the Go toolchain ('go') is not on PATH. ` +
        'Install Go (>= 1.22), or set FERRETDB_BIN to a prebuilt FerretDB binary.',
    );
  }
  fs.mkdirSync(dir, { recursive: true });
  const started = Date.now();
  const secs = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
  log(`building FerretDB ${FERRETDB_VERSION} into ${target} (first run only; a few minutes on 2 cores)`);

  const env = { ...process.env, GOFLAGS: '-buildvcs=false' };
  log(`downloading Go module ${FERRETDB_MODULE}@${FERRETDB_VERSION}`);
  const info = JSON.parse(
    await run(go, ['mod', 'download', '-json', `${FERRETDB_MODULE}@${FERRETDB_VERSION}`], {
      cwd: os.tmpdir(),
      env,
    }),
  );
  if (info.Error || !info.Dir) {
    throw new Error(`go mod download failed for ${FERRETDB_MODULE}@${FERRETDB_VERSION}: ${info.Error || 'no Dir'}`);
  }

  // The module cache is read-only and lacks build/version/version.txt, without which
  // the binary panics at start; build from a writable copy that has it.
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-ferretdb-src-'));
  const tmpBin = path.join(dir, `.ferretdb-${FERRETDB_VERSION}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  try {
    fs.cpSync(info.Dir, src, { recursive: true });
    makeWritable(src);
    fs.writeFileSync(path.join(src, 'build', 'version', 'version.txt'), `${FERRETDB_VERSION}\n`);

    log(`compiling ./cmd/ferretdb (module fetched in ${secs()})`);
    let packages = 0;
    let downloads = 0;
    await run(go, ['build', '-v', '-o', tmpBin, './cmd/ferretdb'], {
      cwd: src,
      env,
      onLine: (line) => {
        // `go build -v` names each package it compiles: report a count, not hundreds of lines.
        if (/^go: downloading /.test(line)) {
          downloads += 1;
          if (downloads % 25 === 1) log(`  downloading dependencies (${downloads} so far, ${secs()})`);
        } else if (/^[\w.-]+(\/[\w.@-]+)*$/.test(line.trim())) {
          packages += 1;
          if (packages % 50 === 0) log(`  compiled ${packages} packages (${secs()})`);
        } else if (line.trim()) {
          log(`  go: ${line}`);
        }
      },
    });
    fs.chmodSync(tmpBin, 0o755);
    fs.renameSync(tmpBin, target); // atomic; a concurrent builder's identical binary may win, harmlessly
    log(`built FerretDB ${FERRETDB_VERSION} in ${secs()}`);
    return target;
  } finally {
    fs.rmSync(src, { recursive: true, force: true });
    fs.rmSync(tmpBin, { force: true });
  }
}

function makeWritable(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      fs.chmodSync(p, 0o755);
      makeWritable(p);
    } else if (entry.isFile()) {
      fs.chmodSync(p, 0o644);
    }
  }
  fs.chmodSync(dir, 0o755);
}

/** Asks the OS for a free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---- children never outlive this process -------------------------------------------

const liveChildren = new Set();
let exitHooksInstalled = false;
// setpriv --pdeathsig makes the kernel SIGKILL the server when this process dies,
// even by kill -9, where no exit handler runs.
const SETPRIV = which('setpriv');

function installExitHooks() {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    // Only act when nobody else handles the signal: then the default would kill this
    // process without running 'exit' handlers. Otherwise whoever handles it decides,
    // and the 'exit' handler below (or pdeathsig) still reaps the servers.
    const handler = () => {
      if (process.listenerCount(sig) !== 1) return;
      cleanupAtExit();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

// Temp data dirs created here are removed when the process exits.
const ownedDirs = new Set();
const DATA_DIR_PREFIX = 'dualsync-tb-';
process.on('exit', cleanupAtExit);

function cleanupAtExit() {
  killAllChildren();
  for (const d of ownedDirs) {
    try {
      fs.rmSync(d, { recursive: true, force: true });
    } catch {
      // best effort at exit
    }
  }
  ownedDirs.clear();
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

let swept = false;
/** Removes temp data dirs left by test processes that died by SIGKILL (named with their pid). */
function sweepStaleDirs() {
  if (swept) return;
  swept = true;
  let entries = [];
  try {
    entries = fs.readdirSync(os.tmpdir());
  } catch {
    return;
  }
  for (const entry of entries) {
    const m = new RegExp(`^${DATA_DIR_PREFIX}(\\d+)-`).exec(entry);
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) {
      fs.rmSync(path.join(os.tmpdir(), entry), { recursive: true, force: true });
    }
  }
}

function killAllChildren() {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** True when the test bed runs mongod instead of FerretDB (DUALSYNC_TESTBED / MONGOD_BIN). */
function useMongod() {
  const mode = process.env.DUALSYNC_TESTBED;
  if (mode === 'ferretdb') return false;
  return mode === 'mongod' || Boolean(process.env.MONGOD_BIN);
}

async function serverCommand(port, dataDir) {
  if (useMongod()) {
    const bin = process.env.MONGOD_BIN || which('mongod');
    if (!bin) throw new Error('DUALSYNC_TESTBED=mongod but no mongod on PATH and MONGOD_BIN is not set');
    return { kind: 'mongod', bin, args: ['--port', String(port), '--dbpath', dataDir, '--bind_ip', '127.0.0.1'] };
  }
  const bin = await ensureFerretDB();
  return {
    kind: 'ferretdb',
    bin,
    args: [
      '--handler=sqlite',
      `--sqlite-url=file:${dataDir.endsWith('/') ? dataDir : `${dataDir}/`}`,
      `--listen-addr=127.0.0.1:${port}`,
      '--state-dir=-',
      '--debug-addr=-',
      '--telemetry=disable',
      '--log-level=error',
    ],
  };
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/** Resolves once `uri` answers a MongoDB ping; rejects at the deadline or as soon as `isDead()` says the process exited. */
async function waitForPing(uri, deadlineMs, isDead) {
  const { MongoClient } = require('mongodb');
  const until = Date.now() + deadlineMs;
  let lastErr = null;
  const { port } = new URL(uri);
  while (Date.now() < until) {
    if (isDead()) throw new Error('server process exited before answering ping');
    // A bare TCP probe first: the driver would spend its whole selection timeout on a refused port.
    if (!(await canConnect(Number(port)))) {
      await new Promise((r) => setTimeout(r, 25)); // poll interval while the server binds its port
      continue;
    }
    const client = new MongoClient(uri, { serverSelectionTimeoutMS: 2000, connectTimeoutMS: 2000 });
    try {
      await client.db('admin').command({ ping: 1 });
      return;
    } catch (err) {
      lastErr = err;
    } finally {
      await client.close().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 100)); // listening but not yet answering: retry shortly
  }
  throw new Error(`no ping answer within ${deadlineMs} ms (last error: ${lastErr && lastErr.message})`);
}

/**
 * Starts one database server (FerretDB, or mongod when configured).
 * @param {{name?: string, port?: number, dataDir?: string}} [opts]
 *   name: label used in messages; port: fixed port (default: a free one);
 *   dataDir: data directory (default: a new temp dir, removed by destroy()/process exit)
 * @returns {Promise<{name: string, uri: string, port: number, dataDir: string, pid: number|undefined,
 *   stop(): Promise<void>, kill(): Promise<void>, start(): Promise<void>, destroy(): Promise<void>}>}
 *   stop() terminates gracefully (SIGTERM, SIGKILL after a deadline); kill() sends SIGKILL;
 *   start() restarts on the same port and data dir; destroy() stops and removes a temp data dir.
 */
async function startServer(opts = {}) {
  const name = opts.name || 'server';
  const fixedPort = opts.port != null;
  let port = fixedPort ? Number(opts.port) : await freePort();
  const ownDir = !opts.dataDir;
  if (ownDir) sweepStaleDirs();
  const dataDir = opts.dataDir
    ? path.resolve(opts.dataDir)
    : fs.mkdtempSync(path.join(os.tmpdir(), `${DATA_DIR_PREFIX}${process.pid}-${name.replace(/[^\w-]/g, '_')}-`));
  fs.mkdirSync(dataDir, { recursive: true });
  if (ownDir) ownedDirs.add(dataDir);
  const timeoutMs = Number(process.env.DUALSYNC_TESTBED_START_TIMEOUT_MS) || 30_000;
  installExitHooks();

  let child = null;
  let exited = null; // promise resolved when the current child exits
  const tail = [];

  async function launch() {
    const cmd = await serverCommand(port, dataDir);
    // Otherwise the readiness ping could be answered by whatever already listens there.
    if (await canConnect(port)) {
      const e = new Error(`${cmd.kind} "${name}": port 127.0.0.1:${port} is already in use by another process`);
      e.addressInUse = true;
      throw e;
    }
    const [bin, args] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd.bin, ...cmd.args]] : [cmd.bin, cmd.args];
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let dead = false;
    liveChildren.add(proc);
    exited = new Promise((resolve) => {
      proc.on('exit', () => {
        dead = true;
        liveChildren.delete(proc);
        resolve();
      });
      proc.on('error', (err) => {
        tail.push(`spawn error: ${err.message}`);
        dead = true;
        liveChildren.delete(proc);
        resolve();
      });
    });
    const keep = (d) => {
      for (const line of d.toString().split('\n')) {
        if (!line.trim()) continue;
        tail.push(line);
        if (tail.length > STDERR_TAIL_LINES) tail.shift();
      }
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    child = proc;
    const uri = `mongodb://127.0.0.1:${port}`;
    try {
      await waitForPing(uri, timeoutMs, () => dead);
    } catch (err) {
      proc.kill('SIGKILL');
      await exited;
      const e = new Error(
        `${cmd.kind} "${name}" did not come up on 127.0.0.1:${port} (data dir ${dataDir}): ${err.message}\n` +
          `--- output tail ---\n${tail.join('\n') || '(no output)'}`,
      );
      e.addressInUse = /address already in use/i.test(tail.join('\n'));
      throw e;
    }
  }

  async function start() {
    if (child && liveChildren.has(child)) return;
    tail.length = 0;
    // An auto-picked port can be taken between probing and binding: pick another then.
    for (let attempt = 1; ; attempt++) {
      try {
        await launch();
        return;
      } catch (err) {
        if (fixedPort || server.everStarted || !err.addressInUse || attempt >= 3) throw err;
        port = await freePort();
        tail.length = 0;
      }
    }
  }

  async function stop() {
    if (!child || !liveChildren.has(child)) return;
    const proc = child;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  }

  async function kill() {
    if (!child || !liveChildren.has(child)) return;
    child.kill('SIGKILL');
    await exited;
  }

  async function destroy() {
    await stop();
    if (ownDir) {
      fs.rmSync(dataDir, { recursive: true, force: true });
      ownedDirs.delete(dataDir);
    }
  }

  const server = {
    name,
    dataDir,
    everStarted: false,
    get port() {
      return port;
    },
    get uri() {
      return `mongodb://127.0.0.1:${port}`;
    },
    get pid() {
      return child && liveChildren.has(child) ? child.pid : undefined;
    },
    /** Last lines the server printed (for diagnosing failures). */
    get outputTail() {
      return tail.join('\n');
    },
    start,
    stop,
    kill,
    destroy,
  };
  await start();
  server.everStarted = true;
  return server;
}

/**
 * Starts the two servers the tests need: "local" (the app's primary) and "atlas" (the copy).
 * @param {{local?: object, atlas?: object}} [opts] per-server options for startServer
 * @returns {Promise<{local: object, atlas: object, stop(): Promise<void>}>} stop() stops both and removes temp data
 */
async function startPair(opts = {}) {
  const results = await Promise.allSettled([
    startServer({ name: 'local', ...(opts.local || {}) }),
    startServer({ name: 'atlas', ...(opts.atlas || {}) }),
  ]);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all(results.filter((r) => r.status === 'fulfilled').map((r) => r.value.destroy()));
    throw failed.reason;
  }
  const [local, atlas] = results.map((r) => r.value);
  return {
    local,
    atlas,
    stop: () => Promise.all([local.destroy(), atlas.destroy()]).then(() => undefined),
  };
}

// ---- CLI ------------------------------------------------------------------------

function parseFlags(argv) {
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([\w-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`unexpected argument: ${argv[i]}`);
    flags[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
  }
  return flags;
}

async function cli(argv) {
  const [cmd, ...rest] = argv;
  const usage =
    'usage: node scripts/testbed.js build | check | start [--local-port N] [--atlas-port N] [--dir DIR]';
  if (cmd === 'build') {
    const bin = await ensureFerretDB();
    const v = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    if (v.status !== 0) throw new Error(`built binary does not run: ${v.stderr || v.error}`);
    console.log(bin);
    return 0;
  }
  if (cmd === 'check') {
    const t0 = Date.now();
    const pair = await startPair();
    const started = Date.now() - t0;
    try {
      const { MongoClient } = require('mongodb');
      for (const s of [pair.local, pair.atlas]) {
        const client = new MongoClient(s.uri, { serverSelectionTimeoutMS: 5000 });
        try {
          const res = await client.db('admin').command({ ping: 1 });
          if (res.ok !== 1) throw new Error(`${s.name}: ping answered ${JSON.stringify(res)}`);
        } finally {
          await client.close();
        }
        console.log(`ok ${s.name} ${s.uri}`);
      }
    } finally {
      await pair.stop();
    }
    console.log(`testbed ok (pair up in ${started} ms)`);
    return 0;
  }
  if (cmd === 'start') {
    const flags = parseFlags(rest);
    const opt = (which) => {
      const o = {};
      if (flags[`${which}-port`]) o.port = Number(flags[`${which}-port`]);
      if (flags.dir) o.dataDir = path.join(flags.dir, which);
      return o;
    };
    const pair = await startPair({ local: opt('local'), atlas: opt('atlas') });
    console.log(`MONGODB_LOCAL_URI=${pair.local.uri}`);
    console.log(`MONGODB_ATLAS_URI=${pair.atlas.uri}`);
    log('running; Ctrl-C (SIGINT) or SIGTERM stops both servers');
    await new Promise((resolve) => {
      const done = () => resolve();
      process.once('SIGINT', done);
      process.once('SIGTERM', done);
    });
    await pair.stop();
    log('stopped');
    return 0;
  }
  console.error(usage);
  return 2;
}

module.exports = { ensureFerretDB, startServer, startPair, useMongod, FERRETDB_VERSION };

if (require.main === module) {
  cli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`testbed: ${err.message}`);
      process.exit(1);
    },
  );
}
