'use strict';
// Small helpers shared by the test-bed engines (scripts/testbed*.js).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const STDERR_TAIL_LINES = 40;

function log(msg) {
  process.stderr.write(`[testbed] ${msg}\n`);
}

/** Where built servers are cached (DUALSYNC_CACHE_DIR, default ~/.cache/dualsync). */
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
function run(cmd, args, { cwd, env, onLine, onOut } = {}) {
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
    child.stdout.on('data', (d) => {
      out.push(d);
      if (onOut) onOut(d);
    });
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
        const outTail = Buffer.concat(out).toString().split('\n').slice(-STDERR_TAIL_LINES).join('\n');
        reject(
          new Error(
            `${cmd} ${args.join(' ')} failed (${signal || `exit ${code}`}):\n${errTail.join('\n')}\n${outTail}`,
          ),
        );
      }
    });
  });
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

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/**
 * Runs `fn` while holding an exclusive lock directory (several test processes, or several
 * engineers' runs, may build the same cache at once). A lock whose owner pid is dead is taken over.
 * @param {string} lockDir
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 * @template T
 */
async function withLock(lockDir, fn) {
  fs.mkdirSync(path.dirname(lockDir), { recursive: true });
  let waitedSince = null;
  for (;;) {
    try {
      fs.mkdirSync(lockDir);
      fs.writeFileSync(path.join(lockDir, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      let owner = NaN;
      try {
        owner = Number(fs.readFileSync(path.join(lockDir, 'pid'), 'utf8'));
      } catch {
        // the owner is between mkdir and writing its pid
      }
      if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) {
        fs.rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (waitedSince === null) {
        waitedSince = Date.now();
        log(`waiting for another process building into ${path.dirname(lockDir)} (lock ${lockDir})`);
      }
      await new Promise((r) => setTimeout(r, 500)); // poll the lock another process holds
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true });
  }
}

module.exports = { log, cacheDir, which, run, freePort, pidAlive, withLock, STDERR_TAIL_LINES };
