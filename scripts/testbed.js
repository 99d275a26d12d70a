#!/usr/bin/env node
'use strict';
/**
 * Test bed: real MongoDB-wire servers for dualsync's tests.
 *
 * No MongoDB server can be installed on the project's machines, so two engines play
 * both "local" and "Atlas" (DUALSYNC_TESTBED picks one):
 *   ferretdb    FerretDB v1.24.2, SQLite backend (default): built from its Go module.
 *   documentdb  PostgreSQL 15 + Microsoft DocumentDB + its gateway (scripts/testbed-documentdb.js):
 *               transactions, secondary indexes, Decimal128; built from ../shared/vendor.
 *   mongod      a real mongod (MONGOD_BIN or PATH), where one exists.
 * Both are built on first use and cached.
 *
 * Module:  engine(), ensureEngine(), ensureFerretDB(), startServer(opts), startPair(opts)
 * CLI:     node scripts/testbed.js build | start | check | packages
 *
 * Environment:
 *   DUALSYNC_CACHE_DIR   where built servers are cached (default ~/.cache/dualsync)
 *   FERRETDB_BIN         use this FerretDB binary instead of building one
 *   DUALSYNC_TESTBED     'ferretdb' (default), 'documentdb' or 'mongod'
 *   DUALSYNC_VENDOR_DIR  where the documentdb tarballs are (default ../shared/vendor)
 *   MONGOD_BIN           mongod binary (implies DUALSYNC_TESTBED=mongod unless that is set)
 *   DUALSYNC_TESTBED_START_TIMEOUT_MS  how long a server may take to answer ping (default 30000;
 *                        60000 for documentdb, which starts two processes)
 */

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { log, cacheDir, which, run, freePort, pidAlive, STDERR_TAIL_LINES } = require('./testbed-util.js');
const { ensureDocumentDB, documentdbCommand, APT_PACKAGES } = require('./testbed-documentdb.js');

const ENGINES = ['ferretdb', 'documentdb', 'mongod'];

/**
 * The engine the test bed runs: DUALSYNC_TESTBED, else 'mongod' when MONGOD_BIN is set, else 'ferretdb'.
 * @returns {'ferretdb'|'documentdb'|'mongod'}
 * @throws {Error} code ERR_TESTBED_ENGINE for an unknown DUALSYNC_TESTBED value
 */
function engine() {
  const mode = process.env.DUALSYNC_TESTBED;
  if (mode) {
    if (!ENGINES.includes(mode)) {
      const e = new Error(`DUALSYNC_TESTBED=${JSON.stringify(mode)} is not a test-bed engine; expected one of: ${ENGINES.join(', ')}`);
      e.code = 'ERR_TESTBED_ENGINE';
      throw e;
    }
    return mode;
  }
  return process.env.MONGOD_BIN ? 'mongod' : 'ferretdb';
}

/**
 * Builds (first use) or locates the selected engine's servers; a no-op for mongod.
 * @returns {Promise<void>}
 */
async function ensureEngine() {
  const e = engine();
  if (e === 'ferretdb') await ensureFerretDB();
  else if (e === 'documentdb') await ensureDocumentDB();
}

const FERRETDB_VERSION = 'v1.24.2';
const FERRETDB_MODULE = 'github.com/FerretDB/FerretDB';
const STOP_GRACE_MS = 10_000;

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

/** True when the test bed runs mongod (DUALSYNC_TESTBED / MONGOD_BIN). */
function useMongod() {
  return engine() === 'mongod';
}

/**
 * What to run for one server: its processes in start order (stopped in reverse) and its URI.
 * @returns {Promise<{kind: string, uri: string, procs: Array<{name: string, bin: string, args: string[], stopSignal: string}>}>}
 */
async function serverCommand(port, dataDir) {
  const kind = engine();
  if (kind === 'mongod') {
    const bin = process.env.MONGOD_BIN || which('mongod');
    if (!bin) throw new Error('DUALSYNC_TESTBED=mongod but no mongod on PATH and MONGOD_BIN is not set');
    const args = ['--port', String(port), '--dbpath', dataDir, '--bind_ip', '127.0.0.1'];
    return { kind, uri: `mongodb://127.0.0.1:${port}`, procs: [{ name: 'mongod', bin, args, stopSignal: 'SIGTERM' }] };
  }
  if (kind === 'documentdb') return documentdbCommand(port, dataDir);
  const bin = await ensureFerretDB();
  const args = [
    '--handler=sqlite',
    `--sqlite-url=file:${dataDir.endsWith('/') ? dataDir : `${dataDir}/`}`,
    `--listen-addr=127.0.0.1:${port}`,
    '--state-dir=-',
    '--debug-addr=-',
    '--telemetry=disable',
    '--log-level=error',
  ];
  return { kind, uri: `mongodb://127.0.0.1:${port}`, procs: [{ name: 'ferretdb', bin, args, stopSignal: 'SIGTERM' }] };
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
  const timeoutMs = Number(process.env.DUALSYNC_TESTBED_START_TIMEOUT_MS) || (engine() === 'documentdb' ? 60_000 : 30_000);
  installExitHooks();

  let procs = []; // the running server's processes, in start order
  let uri = null;
  const tail = [];
  const running = () => procs.some((p) => liveChildren.has(p.child));

  function spawnOne(spec, onDeath) {
    const [bin, args] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', spec.bin, ...spec.args]] : [spec.bin, spec.args];
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(child);
    const exited = new Promise((resolve) => {
      const gone = () => {
        liveChildren.delete(child);
        onDeath();
        resolve();
      };
      child.on('exit', gone);
      child.on('error', (err) => {
        tail.push(`${spec.name}: spawn error: ${err.message}`);
        gone();
      });
    });
    const keep = (d) => {
      for (const line of d.toString().split('\n')) {
        if (!line.trim()) continue;
        tail.push(procs.length > 1 ? `${spec.name}: ${line}` : line);
        if (tail.length > STDERR_TAIL_LINES) tail.shift();
      }
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    return { spec, child, exited };
  }

  async function launch() {
    const cmd = await serverCommand(port, dataDir);
    // Otherwise the readiness ping could be answered by whatever already listens there.
    if (await canConnect(port)) {
      const e = new Error(`${cmd.kind} "${name}": port 127.0.0.1:${port} is already in use by another process`);
      e.addressInUse = true;
      throw e;
    }
    let dead = false;
    procs = [];
    try {
      const until = Date.now() + timeoutMs;
      for (const spec of cmd.procs) {
        procs.push(spawnOne(spec, () => (dead = true)));
        // The next process needs this one (the gateway retries postgres only every 10 s).
        if (spec.waitReady) await spec.waitReady(until, () => dead);
      }
      await waitForPing(cmd.uri, Math.max(0, until - Date.now()), () => dead);
    } catch (err) {
      await signalAll('SIGKILL');
      const e = new Error(
        `${cmd.kind} "${name}" did not come up on 127.0.0.1:${port} (data dir ${dataDir}): ${err.message}\n` +
          `--- output tail ---\n${tail.join('\n') || '(no output)'}`,
      );
      e.addressInUse = /address already in use/i.test(tail.join('\n'));
      throw e;
    }
    uri = cmd.uri;
  }

  /** Stops the processes in reverse start order (the gateway before its postgres). */
  async function signalAll(signal) {
    for (const p of [...procs].reverse()) {
      if (!liveChildren.has(p.child)) continue;
      p.child.kill(signal || p.spec.stopSignal);
      const timer = signal === 'SIGKILL' ? null : setTimeout(() => p.child.kill('SIGKILL'), STOP_GRACE_MS);
      await p.exited;
      if (timer) clearTimeout(timer);
    }
  }

  async function start() {
    if (running()) return;
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
    if (running()) await signalAll(null);
  }

  async function kill() {
    if (running()) await signalAll('SIGKILL');
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
    /** mongodb:// URI without a path (tests append `/<db>`); documentdb's carries the SCRAM login. */
    get uri() {
      return uri;
    },
    /** pid of the process that serves the wire protocol (the last one started). */
    get pid() {
      const last = procs[procs.length - 1];
      return last && liveChildren.has(last.child) ? last.child.pid : undefined;
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
    'usage: [DUALSYNC_TESTBED=ferretdb|documentdb|mongod] node scripts/testbed.js build | check | packages | start [--local-port N] [--atlas-port N] [--dir DIR]';
  const kind = engine(); // an unknown DUALSYNC_TESTBED fails here, before any work
  if (cmd === 'build') {
    if (kind === 'ferretdb') {
      const bin = await ensureFerretDB();
      const v = spawnSync(bin, ['--version'], { encoding: 'utf8' });
      if (v.status !== 0) throw new Error(`built binary does not run: ${v.stderr || v.error}`);
      console.log(bin);
    } else {
      await ensureEngine();
      console.log(`${kind} ready`);
    }
    return 0;
  }
  if (cmd === 'packages') {
    // The Debian packages an engine needs (scripts/test.sh installs them when root).
    console.log(kind === 'documentdb' ? APT_PACKAGES.join(' ') : '');
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

module.exports = { engine, ensureEngine, ensureFerretDB, ensureDocumentDB, startServer, startPair, useMongod, ENGINES, FERRETDB_VERSION };

if (require.main === module) {
  cli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`testbed: ${err.message}`);
      process.exit(1);
    },
  );
}
