'use strict';
/**
 * Test-bed engine `documentdb`: PostgreSQL 15 (Debian) + Microsoft DocumentDB extensions +
 * its Rust MongoDB-wire gateway, built from the tarballs in ../shared/vendor (checksums
 * verified) and cached under DUALSYNC_CACHE_DIR. Unlike FerretDB v1 it has transactions,
 * secondary indexes, Decimal128 and nested arrays, so it plays a MongoDB replica set's part.
 *
 * Build (once, under a lock): extensions into the system PostgreSQL (needs root, like the
 * apt packages), the gateway into the cache, a self-signed certificate (a release gateway
 * refuses to start without one), and a template data dir (initdb + CREATE EXTENSION + a
 * SCRAM login role) that each server copies, so a server starts in about a second.
 *
 * Per server: one postgres (127.0.0.1 port + unix socket in the server's dir) and one
 * gateway on the server's port; both stop and start together.
 */

const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { log, cacheDir, run, freePort, withLock } = require('./testbed-util.js');

const PG_MAJOR = 15;
const PG_BIN = `/usr/lib/postgresql/${PG_MAJOR}/bin`;
const PG_CONFIG = `${PG_BIN}/pg_config`;

/** Debian packages the build and the servers need (vendor/README.md). */
const APT_PACKAGES = [
  `postgresql-${PG_MAJOR}`,
  `postgresql-server-dev-${PG_MAJOR}`,
  'postgresql-contrib',
  'libbson-dev',
  'libpcre2-dev',
  'libintelrdfpmath-dev',
  `postgresql-${PG_MAJOR}-postgis-3`,
  `postgresql-${PG_MAJOR}-rum`,
  'libkrb5-dev',
  'libicu-dev',
  'pkg-config',
  'build-essential',
  'libssl-dev',
  'openssl',
];

const TARBALLS = {
  documentdb: { file: 'documentdb-b2e220c.tar.gz', dir: 'documentdb-b2e220c' },
  pgvector: { file: 'pgvector-0.8.0.tar.gz', dir: 'pgvector-0.8.0' },
  pgcron: { file: 'pg_cron-1.6.3.tar.gz', dir: 'pg_cron-1.6.3' },
};

const LOGIN_USER = 'dualsync';
// postgres refuses to run as root; as root the servers run as this OS user.
const SERVER_OS_USER = 'postgres';

function repoRoot() {
  return path.resolve(__dirname, '..');
}

/**
 * The read-only vendor dir: DUALSYNC_VENDOR_DIR, else ../shared/vendor beside the clone
 * (CI), else beside the main checkout of a git worktree.
 */
function vendorDir() {
  const candidates = [];
  if (process.env.DUALSYNC_VENDOR_DIR) candidates.push(path.resolve(process.env.DUALSYNC_VENDOR_DIR));
  candidates.push(path.join(repoRoot(), '..', 'shared', 'vendor'));
  const common = spawnSync('git', ['rev-parse', '--path-format=absolute', '--git-common-dir'], {
    cwd: repoRoot(),
    encoding: 'utf8',
  });
  if (common.status === 0 && common.stdout.trim()) {
    candidates.push(path.join(path.dirname(common.stdout.trim()), '..', 'shared', 'vendor'));
  }
  const found = candidates.find((d) => fs.existsSync(path.join(d, 'SHA256SUMS')));
  if (!found) {
    throw new Error(
      `DUALSYNC_TESTBED=documentdb needs the vendor tarballs (SHA256SUMS + ${Object.values(TARBALLS)
        .map((t) => t.file)
        .join(', ')}); looked in: ${candidates.join(', ')}. Set DUALSYNC_VENDOR_DIR to the directory holding them.`,
    );
  }
  return found;
}

/** Verifies each tarball against SHA256SUMS; returns the documentdb tarball's digest. */
function verifyTarballs(dir) {
  const sums = new Map();
  for (const line of fs.readFileSync(path.join(dir, 'SHA256SUMS'), 'utf8').split('\n')) {
    const m = /^([0-9a-f]{64})\s+\*?(\S+)$/.exec(line.trim());
    if (m) sums.set(m[2], m[1]);
  }
  const digests = {};
  for (const { file } of Object.values(TARBALLS)) {
    const want = sums.get(file);
    if (!want) throw new Error(`${path.join(dir, 'SHA256SUMS')} has no line for ${file}`);
    const got = crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, file))).digest('hex');
    if (got !== want) throw new Error(`checksum mismatch for ${path.join(dir, file)}: expected ${want}, got ${got}`);
    digests[file] = got;
  }
  return digests;
}

function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** `apt-get install` command for the missing packages, or null when all are installed. */
function missingPackagesCommand() {
  const q = spawnSync('dpkg-query', ['-W', '-f=${Package} ${Status}\n', ...APT_PACKAGES], { encoding: 'utf8' });
  const ok = new Set(
    (q.stdout || '')
      .split('\n')
      .filter((l) => / install ok installed$/.test(l))
      .map((l) => l.split(' ')[0]),
  );
  const missing = APT_PACKAGES.filter((p) => !ok.has(p));
  return missing.length ? `apt-get install -y ${missing.join(' ')}` : null;
}

function extensionInstalled() {
  const share = `/usr/share/postgresql/${PG_MAJOR}/extension`;
  const lib = `/usr/lib/postgresql/${PG_MAJOR}/lib`;
  const control = (name) => {
    try {
      return fs.readFileSync(path.join(share, `${name}.control`), 'utf8');
    } catch {
      return '';
    }
  };
  return (
    /default_version = '0\.108-0'/.test(control('documentdb')) &&
    /default_version = '1\.6'/.test(control('pg_cron')) &&
    /default_version = '0\.8\.0'/.test(control('vector')) &&
    ['pg_documentdb.so', 'pg_documentdb_core.so', 'pg_cron.so', 'vector.so'].every((f) => fs.existsSync(path.join(lib, f)))
  );
}

/** Cache layout for one set of tarballs. */
function layout(digest) {
  const base = path.join(cacheDir(), `documentdb-${digest.slice(0, 8)}`);
  return {
    base,
    lock: path.join(base, '.build.lock'),
    src: path.join(base, 'src'),
    pkgconfig: path.join(base, 'pkgconfig'),
    gwTarget: path.join(base, 'gw-target'),
    gateway: path.join(base, 'bin', 'pg_documentdb_gw'),
    cert: path.join(base, 'tls', 'cert.pem'),
    key: path.join(base, 'tls', 'key.pem'),
    template: path.join(base, 'template'),
    credentials: path.join(base, 'credentials.json'),
    ready: path.join(base, 'ready.json'),
  };
}

let ensurePromise = null;

/**
 * Builds (first use) and returns what a documentdb server needs. Safe across processes (a lock dir).
 * @returns {Promise<{gateway: string, cert: string, key: string, template: string, user: string, password: string}>}
 */
function ensureDocumentDB() {
  if (!ensurePromise) {
    ensurePromise = buildAll().catch((err) => {
      ensurePromise = null;
      throw err;
    });
  }
  return ensurePromise;
}

function readReady(l) {
  try {
    const ready = JSON.parse(fs.readFileSync(l.ready, 'utf8'));
    const cred = JSON.parse(fs.readFileSync(l.credentials, 'utf8'));
    if (fs.existsSync(l.gateway) && fs.existsSync(path.join(l.template, 'PG_VERSION')) && extensionInstalled()) {
      return { ...ready, gateway: l.gateway, cert: l.cert, key: l.key, template: l.template, ...cred };
    }
  } catch {
    // not built yet
  }
  return null;
}

async function buildAll() {
  const vdir = vendorDir();
  const digests = verifyTarballs(vdir);
  const l = layout(digests[TARBALLS.documentdb.file]);
  const ready = readReady(l);
  if (ready) return ready;
  return withLock(l.lock, async () => {
    const again = readReady(l);
    if (again) return again;
    const started = Date.now();
    const secs = () => `${((Date.now() - started) / 1000).toFixed(0)}s`;
    const missing = missingPackagesCommand();
    if (missing) {
      throw new Error(
        `DUALSYNC_TESTBED=documentdb needs Debian packages that are not installed; run as root:\n  apt-get update && ${missing}`,
      );
    }
    log(`building the documentdb test bed into ${l.base} (first run only; ~10 min on 2 cores)`);
    await extract(vdir, l);
    await buildExtensions(l, secs);
    await buildGateway(l, secs);
    await makeCertificate(l);
    const cred = await makeTemplate(l, secs);
    fs.writeFileSync(l.credentials, JSON.stringify(cred), { mode: 0o600 });
    fs.writeFileSync(l.ready, JSON.stringify({ builtAt: new Date().toISOString(), digests }));
    log(`documentdb test bed ready in ${secs()}`);
    return readReady(l);
  });
}

/** Unpacks each verified tarball once (the cache dir is keyed by its digest); a rename makes it all-or-nothing. */
async function extract(vdir, l) {
  fs.mkdirSync(l.src, { recursive: true });
  for (const { file, dir } of Object.values(TARBALLS)) {
    if (fs.existsSync(path.join(l.src, dir))) continue;
    const tmp = fs.mkdtempSync(path.join(l.src, '.extract-'));
    try {
      await run('tar', ['xzf', path.join(vdir, file), '-C', tmp]);
      fs.renameSync(path.join(tmp, dir), path.join(l.src, dir));
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
}

async function buildExtensions(l, secs) {
  if (extensionInstalled()) {
    log('DocumentDB, pg_cron and pgvector extensions already installed');
    return;
  }
  if (!isRoot()) {
    throw new Error(
      `the DocumentDB extensions must be installed into /usr/lib/postgresql/${PG_MAJOR} once, which needs root: ` +
        'run `sudo DUALSYNC_TESTBED=documentdb node scripts/testbed.js build`',
    );
  }
  // libintelrdfpmath-dev ships no pkg-config file; the DocumentDB makefiles ask for one.
  fs.mkdirSync(l.pkgconfig, { recursive: true });
  fs.writeFileSync(
    path.join(l.pkgconfig, 'intelmathlib.pc'),
    'Name: intelmathlib\nDescription: Intel decimal floating-point math library\nVersion: 2.0\nCflags:\nLibs: -lbidgcc000\n',
  );
  const env = {
    ...process.env,
    PKG_CONFIG_PATH: [l.pkgconfig, process.env.PKG_CONFIG_PATH].filter(Boolean).join(':'),
  };
  const jobs = `-j${Math.min(2, os.cpus().length)}`;
  const make = (dir, targets, extra = []) =>
    run('make', [jobs, `PG_CONFIG=${PG_CONFIG}`, 'with_llvm=no', ...extra, ...targets], { cwd: path.join(l.src, dir), env });
  log(`  pgvector (${secs()})`);
  await make(TARBALLS.pgvector.dir, ['all']);
  await make(TARBALLS.pgvector.dir, ['install']);
  log(`  pg_cron (${secs()})`);
  await make(TARBALLS.pgcron.dir, ['all']);
  await make(TARBALLS.pgcron.dir, ['install']);
  log(`  DocumentDB extensions (${secs()})`);
  // Debian's libbson (1.23) predates BSON_SUBTYPE_SENSITIVE, which upstream (1.28) defines.
  await make(TARBALLS.documentdb.dir, ['install-no-distributed'], ['COPT=-DBSON_SUBTYPE_SENSITIVE=0x08 -Wno-error=switch']);
  if (!extensionInstalled()) throw new Error('DocumentDB extensions built but not found in the PostgreSQL install dirs');
}

async function buildGateway(l, secs) {
  if (fs.existsSync(l.gateway)) return;
  log(`  gateway: cargo build --release --locked (~8 min cold; ${secs()})`);
  const cwd = path.join(l.src, TARBALLS.documentdb.dir, 'pg_documentdb_gw');
  let compiled = 0;
  await run('cargo', ['build', '--release', '--locked'], {
    cwd,
    env: { ...process.env, CARGO_TARGET_DIR: l.gwTarget },
    onLine: (line) => {
      if (/^\s*Compiling /.test(line) && ++compiled % 50 === 0) log(`    compiled ${compiled} crates (${secs()})`);
      else if (/^(error|warning: unused)/.test(line)) log(`    cargo: ${line}`);
    },
  });
  fs.mkdirSync(path.dirname(l.gateway), { recursive: true });
  const tmp = `${l.gateway}.${process.pid}.tmp`;
  fs.copyFileSync(path.join(l.gwTarget, 'release', 'documentdb_gateway'), tmp);
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, l.gateway);
}

async function makeCertificate(l) {
  if (fs.existsSync(l.cert) && fs.existsSync(l.key)) return;
  fs.mkdirSync(path.dirname(l.cert), { recursive: true });
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '3650', '-subj', '/CN=localhost',
    '-keyout', l.key, '-out', l.cert,
  ]);
}

/** Argument prefix that runs a command as the server's OS user (postgres refuses root). */
function asServerUser() {
  if (!isRoot()) return [];
  return ['setpriv', `--reuid=${SERVER_OS_USER}`, `--regid=${SERVER_OS_USER}`, '--init-groups'];
}

function serverUserIds() {
  const q = spawnSync('id', ['-u', SERVER_OS_USER], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', SERVER_OS_USER], { encoding: 'utf8' });
  if (q.status !== 0 || g.status !== 0) {
    throw new Error(`running as root, the documentdb test bed needs the OS user "${SERVER_OS_USER}" (package postgresql-${PG_MAJOR} creates it)`);
  }
  return { uid: Number(q.stdout), gid: Number(g.stdout) };
}

/** Makes `dir` (a server's private dir) usable by the server's OS user. */
function handToServerUser(dir) {
  if (!isRoot()) return;
  const { uid, gid } = serverUserIds();
  const r = spawnSync('chown', ['-R', `${uid}:${gid}`, dir]);
  if (r.status !== 0) throw new Error(`chown ${dir} failed: ${r.stderr}`);
}

const POSTGRES_CONF = [
  "listen_addresses = '127.0.0.1'",
  "shared_preload_libraries = 'pg_cron,pg_documentdb_core,pg_documentdb'",
  "cron.database_name = 'postgres'",
  'shared_buffers = 32MB',
  'max_connections = 200',
  // A test server's process may be killed, never the machine: fsync buys nothing here.
  'fsync = off',
  'full_page_writes = off',
  'log_min_messages = warning',
  "log_line_prefix = '%m [%p] '",
  '',
].join('\n');

// Passed on each start (not only written into the template), so a cached template made by an
// older version of this file gets them too. pg_cron runs DocumentDB's index builds: in background
// workers, because its default (a libpq connection to the host and port recorded when the job was
// created, i.e. the template's) cannot reach a copied server.
const PG_FLAGS = ['-c', 'cron.use_background_workers=on', '-c', 'max_worker_processes=32'];

async function makeTemplate(l, secs) {
  log(`  template data dir (initdb + CREATE EXTENSION documentdb; ${secs()})`);
  // Built in the temp dir: as root, the server's OS user cannot enter the cache under /root.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-docdb-template-'));
  try {
    const data = path.join(work, 'data');
    handToServerUser(work);
    const initdb = wrap([`${PG_BIN}/initdb`, '-D', data, '-U', 'postgres', '--auth=trust', '--no-locale', '-E', 'UTF8']);
    await run(initdb[0], initdb.slice(1));
    fs.appendFileSync(path.join(data, 'postgresql.conf'), POSTGRES_CONF);
    const port = await freePort();
    const pg = wrap([`${PG_BIN}/pg_ctl`, '-D', data, '-w', '-t', '120', '-o', `-p ${port} -k ${work} ${PG_FLAGS.join(' ')}`, '-l', path.join(work, 'pg.log')]);
    await run(pg[0], [...pg.slice(1), 'start']);
    const password = crypto.randomBytes(18).toString('base64url');
    try {
      const sql = [
        'CREATE EXTENSION documentdb CASCADE;',
        `CREATE ROLE ${LOGIN_USER} WITH LOGIN CREATEROLE PASSWORD '${password}' IN ROLE documentdb_admin_role;`,
        `GRANT ${LOGIN_USER} TO postgres WITH ADMIN OPTION;`,
      ].join('\n');
      const psql = wrap([`${PG_BIN}/psql`, '-h', work, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql]);
      await run(psql[0], psql.slice(1));
    } catch (err) {
      let pgLog = '';
      try {
        pgLog = fs.readFileSync(path.join(work, 'pg.log'), 'utf8').split('\n').slice(-30).join('\n');
      } catch {
        // no log
      }
      throw new Error(`${err.message.replaceAll(password, '<redacted>')}\n--- postgres log ---\n${pgLog}`);
    } finally {
      await run(pg[0], [...pg.slice(1), '-m', 'fast', 'stop']).catch(() => {});
    }
    fs.rmSync(l.template, { recursive: true, force: true });
    const tmp = `${l.template}.${process.pid}.tmp`;
    fs.rmSync(tmp, { recursive: true, force: true });
    const cp = spawnSync('cp', ['-a', data, tmp]);
    if (cp.status !== 0) throw new Error(`copying the template failed: ${cp.stderr}`);
    fs.renameSync(tmp, l.template);
    return { user: LOGIN_USER, password };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function wrap(argv) {
  return isRoot() ? [...asServerUser(), '--', ...argv] : argv;
}

/**
 * What startServer runs for one documentdb server: postgres then the gateway.
 * @param {number} port the gateway's (MongoDB wire) port
 * @param {string} dataDir the server's private dir (data survives stop/start)
 * @returns {Promise<{kind: string, uri: string, procs: Array<{name: string, bin: string, args: string[], stopSignal: string}>}>}
 */
async function documentdbCommand(port, dataDir) {
  const b = await ensureDocumentDB();
  const pgData = path.join(dataDir, 'pg');
  const stateFile = path.join(dataDir, 'testbed-state.json');
  let state = {};
  try {
    state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  } catch {
    // first start
  }
  if (!fs.existsSync(path.join(pgData, 'PG_VERSION'))) {
    const cp = spawnSync('cp', ['-a', b.template, pgData]);
    if (cp.status !== 0) throw new Error(`copying the documentdb template into ${pgData} failed: ${cp.stderr}`);
  }
  // postgres keeps its port across restarts (the gateway config names it).
  if (!state.pgPort) state.pgPort = await freePort();
  fs.writeFileSync(stateFile, JSON.stringify(state));
  const gwConfig = path.join(dataDir, 'gateway.json');
  fs.writeFileSync(
    gwConfig,
    JSON.stringify({
      NodeHostName: 'localhost',
      BlockedRolePrefixes: [],
      UseLocalHost: true,
      GatewayListenPort: port,
      PostgresHostName: '127.0.0.1',
      PostgresPort: state.pgPort,
      PostgresSystemUser: 'postgres',
      EnforceSslTcp: false,
      CertificateOptions: { CertType: 'pem_file', FilePath: b.cert, KeyFilePath: b.key },
      TransactionTimeoutSecs: 60,
      CursorTimeoutSecs: 600,
      PostgresStartupWaitTimeSeconds: 120,
    }),
  );
  handToServerUser(dataDir);
  const pg = wrap([`${PG_BIN}/postgres`, '-D', pgData, '-p', String(state.pgPort), '-k', dataDir, ...PG_FLAGS]);
  return {
    kind: 'documentdb',
    uri: `mongodb://${b.user}:${encodeURIComponent(b.password)}@127.0.0.1:${port}`,
    procs: [
      // SIGINT = postgres "fast" shutdown (SIGTERM would wait for clients to leave).
      { name: 'postgres', bin: pg[0], args: pg.slice(1), stopSignal: 'SIGINT', waitReady: (until, isDead) => pgReady(state.pgPort, until, isDead) },
      { name: 'gateway', bin: b.gateway, args: [gwConfig], stopSignal: 'SIGINT' },
    ],
  };
}

/** Resolves once postgres on `port` accepts connections (pg_isready), rejects at `until` or when it died. */
async function pgReady(port, until, isDead) {
  while (Date.now() < until) {
    if (isDead()) throw new Error('postgres exited during startup');
    const r = spawnSync(`${PG_BIN}/pg_isready`, ['-q', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-t', '1']);
    if (r.status === 0) return;
    await new Promise((res) => setTimeout(res, 50)); // poll interval while postgres starts
  }
  throw new Error(`postgres on 127.0.0.1:${port} not accepting connections in time`);
}

module.exports = { _internals: { vendorDir, verifyTarballs, layout, extract, buildExtensions }, ensureDocumentDB, documentdbCommand, APT_PACKAGES, missingPackagesCommand };
