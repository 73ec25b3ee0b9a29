'use strict'
// Shared helper for the JS end-to-end suites: starts a Tally server on a free
// loopback port with a fresh data directory, builds official `faunadb` driver
// clients pointed at it, and stops it (SIGTERM, then SIGKILL after 5 s).
//
// Environment:
//   TALLY_BIN            path to the tally binary (default: <repo>/target/release/tally)
//   TALLY_KEEP_DATA=1    keep the temp data dir after the test (for debugging)
//   TALLY_SERVER_LOG=1   echo the server's output to this process's stderr

const { spawn } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const http = require('node:http')
const https = require('node:https')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const faunadb = require('faunadb')

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..')
const HOST = '127.0.0.1'
const READY_TIMEOUT_MS = 60_000
const STOP_GRACE_MS = 5_000

function tallyBin() {
  const fromEnv = process.env.TALLY_BIN
  return fromEnv
    ? path.resolve(REPO_ROOT, fromEnv)
    : path.join(REPO_ROOT, 'target', 'release', 'tally')
}

/** Ask the kernel for a free loopback port. */
// Ports handed out by this process, never handed out twice.
const portsGiven = new Set()

function tryListen(port) {
  return new Promise(resolve => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', () => resolve(false))
    srv.listen(port, HOST, () => srv.close(() => resolve(true)))
  })
}

/**
 * A port free now, for a server started later (a cluster's spare member may start
 * minutes after its port was chosen). Chosen below the kernel's ephemeral range
 * (32768 and up), so outgoing connections of the meantime cannot take it, at random so
 * that test files running in parallel processes rarely try the same one.
 */
async function freePort() {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    if (portsGiven.has(port)) continue
    if (await tryListen(port)) {
      portsGiven.add(port)
      return port
    }
  }
  throw new Error('no free port found in 20000-31999')
}

const sleep = ms => new Promise(r => setTimeout(r, ms))

/** Resolves true if `promise` settles within `ms`, else false (no dangling timer). */
function waitFor(promise, ms) {
  let timer
  return Promise.race([
    promise.then(() => true),
    new Promise(r => {
      timer = setTimeout(() => r(false), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * A plain HTTP/1.1 request to the server, bounded by `timeoutMs`.
 * Resolves {status, headers, body (string)}; rejects on network errors/timeouts.
 */
function rawRequest(port, opts = {}) {
  const {
    method = 'POST',
    path: reqPath = '/',
    headers = {},
    body,
    timeoutMs = 30_000,
    ca, // PEM of a CA to trust: speak https
  } = opts
  return new Promise((resolve, reject) => {
    let settled = false
    const done = (fn, v) => {
      if (!settled) {
        settled = true
        clearTimeout(timer)
        fn(v)
      }
    }
    const req = (ca ? https : http).request(
      { host: HOST, port, method, path: reqPath, headers, agent: false, ...(ca ? { ca } : {}) },
      res => {
        const chunks = []
        res.on('data', c => chunks.push(c))
        res.on('end', () =>
          done(resolve, {
            status: res.statusCode,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          })
        )
        res.on('error', e => done(reject, e))
      }
    )
    const timer = setTimeout(() => {
      req.destroy(new Error(`request timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    req.on('error', e => done(reject, e))
    if (body !== undefined) req.end(body)
    else req.end()
  })
}

/** GET /ping (over https when `ca` is given); resolves the status code, or rejects. */
async function ping(port, timeoutMs = 2_000, ca = undefined) {
  const res = await rawRequest(port, { method: 'GET', path: '/ping', timeoutMs, ca })
  return res.status
}

class TallyServer {
  constructor(opts = {}) {
    this.bin = opts.bin || tallyBin()
    this.rootKey =
      opts.rootKey || 'tally-test-root-' + crypto.randomBytes(8).toString('hex')
    this.dataDir =
      opts.dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'tally-js-'))
    this.ownsDataDir = !opts.dataDir
    // Extra `tally serve` flags (e.g. --jwks-allow-private for a loopback JWKS server).
    this.extraArgs = opts.extraArgs || []
    // Serve https with these PEM files ({cert, key, ca: the CA file clients trust}).
    this.tls = opts.tls || null
    // Address to bind (clients still connect to HOST).
    this.listenHost = opts.listenHost || HOST
    this.port = null
    this.proc = null
    this.output = ''
    this.clients = []
    this.exitInfo = null
  }

  get url() {
    return `${this.tls ? 'https' : 'http'}://${HOST}:${this.port}`
  }

  /** The trusted CA's PEM when serving https. */
  get caPem() {
    return this.tls ? fs.readFileSync(this.tls.ca) : undefined
  }

  /** Last `n` characters of the server's combined stdout/stderr. */
  logTail(n = 4000) {
    return this.output.slice(-n)
  }

  async start() {
    if (!fs.existsSync(this.bin)) {
      throw new Error(
        `tally binary not found at ${this.bin}; run \`cargo build --release -p tally\` ` +
          'or set TALLY_BIN'
      )
    }
    this.port = await freePort()
    const listen = `${this.listenHost}:${this.port}`
    const args = [
      'serve',
      '--data-dir',
      this.dataDir,
      '--listen',
      listen,
      '--root-key',
      this.rootKey,
      ...(this.tls ? ['--tls-cert', this.tls.cert, '--tls-key', this.tls.key] : []),
      ...this.extraArgs,
    ]
    this.exitInfo = null
    const proc = spawn(this.bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_BACKTRACE: '1' },
    })
    this.proc = proc
    let sawListening = false
    const onData = chunk => {
      const s = chunk.toString('utf8')
      this.output += s
      if (this.output.length > 1_000_000) this.output = this.output.slice(-500_000)
      if (process.env.TALLY_SERVER_LOG) process.stderr.write(s)
      if (this.output.includes(`listening on ${listen}`)) sawListening = true
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', onData)
    const exited = new Promise(resolve => {
      proc.on('exit', (code, signal) => {
        this.exitInfo = { code, signal }
        resolve()
      })
    })
    this.exited = exited
    proc.on('error', e => {
      this.output += `\n[spawn error] ${e.message}\n`
    })

    const deadline = Date.now() + READY_TIMEOUT_MS
    while (Date.now() < deadline) {
      if (this.exitInfo) {
        throw new Error(
          `tally exited before becoming ready (${JSON.stringify(this.exitInfo)}):\n` +
            this.logTail()
        )
      }
      if (sawListening) break
      try {
        if ((await ping(this.port, 1_000, this.caPem)) === 200) break
      } catch (_) {
        // not up yet
      }
      await sleep(100)
    }
    if (Date.now() >= deadline) {
      await this.stop()
      throw new Error(
        `tally did not become ready within ${READY_TIMEOUT_MS} ms:\n` + this.logTail()
      )
    }
    // Readiness: /ping must answer 200 once the server says it listens.
    const pingDeadline = Date.now() + 10_000
    for (;;) {
      try {
        const st = await ping(this.port, 1_000, this.caPem)
        if (st === 200) break
        if (Date.now() > pingDeadline) throw new Error(`/ping answered ${st}`)
      } catch (e) {
        if (Date.now() > pingDeadline) {
          throw new Error(`tally listening but /ping fails: ${e.message}\n${this.logTail()}`)
        }
      }
      await sleep(100)
    }
    return this
  }

  /** True while the server process has not exited. */
  get alive() {
    return this.proc !== null && this.exitInfo === null
  }

  /** Official driver client against this server. */
  client(secret = this.rootKey, extra = {}) {
    const c = new faunadb.Client({
      secret,
      domain: HOST,
      port: this.port,
      scheme: 'http',
      timeout: 60,
      checkNewVersion: false,
      ...extra,
    })
    this.clients.push(c)
    return c
  }

  /** The root key's admin client. */
  adminClient(extra = {}) {
    return this.client(this.rootKey, extra)
  }

  /** POST a raw body to / with the root key (or `opts.secret`). */
  raw(body, opts = {}) {
    const headers = {
      'content-type': 'application/json',
      ...(opts.secret === null
        ? {}
        : { authorization: `Bearer ${opts.secret || this.rootKey}` }),
      ...(opts.headers || {}),
    }
    return rawRequest(this.port, {
      method: 'POST',
      path: opts.path || '/',
      headers,
      body,
      timeoutMs: opts.timeoutMs,
      ca: this.caPem,
    })
  }

  async closeClients() {
    const cs = this.clients
    this.clients = []
    await Promise.all(
      cs.map(c => Promise.resolve(c.close({ force: true })).catch(() => {}))
    )
  }

  async stop({ keepData = false } = {}) {
    await this.closeClients()
    const proc = this.proc
    if (proc && this.exitInfo === null) {
      proc.kill('SIGTERM')
      const exitedInTime = await waitFor(this.exited, STOP_GRACE_MS)
      if (!exitedInTime && this.exitInfo === null) {
        proc.kill('SIGKILL')
        await waitFor(this.exited, STOP_GRACE_MS)
      }
    }
    this.proc = null
    if (!keepData && this.ownsDataDir && !process.env.TALLY_KEEP_DATA) {
      fs.rmSync(this.dataDir, { recursive: true, force: true })
    }
  }
}

/** Start a fresh server (own temp data dir). */
async function startServer(opts = {}) {
  const s = new TallyServer(opts)
  await s.start()
  return s
}

/**
 * Assert that `promise` rejects with a driver HTTP error of class `name`
 * (e.g. 'BadRequest') whose first error has `code`. Returns the error.
 */
async function expectFaunaError(promise, name, code) {
  let err
  try {
    const v = await promise
    err = new Error(
      `expected ${name}(${code}) but the query succeeded with ${safeStringify(v)}`
    )
    err.unexpectedSuccess = true
  } catch (e) {
    const gotCode = firstErrorCode(e)
    if (e.name !== name || (code !== undefined && gotCode !== code)) {
      const content = e.requestResult ? safeStringify(e.requestResult.responseContent) : ''
      throw new Error(
        `expected ${name}(${code}) but got ${e.name}: ${e.message} ${content}`
      )
    }
    return e
  }
  throw err
}

/** `code` of the first server error carried by a driver error, if any. */
function firstErrorCode(e) {
  const rc = e && e.requestResult && e.requestResult.responseContent
  const errs = rc && rc.errors
  return Array.isArray(errs) && errs.length > 0 ? errs[0].code : undefined
}

function safeStringify(v) {
  try {
    return JSON.stringify(v)
  } catch (_) {
    return String(v)
  }
}

module.exports = {
  REPO_ROOT,
  tallyBin,
  HOST,
  TallyServer,
  startServer,
  freePort,
  rawRequest,
  ping,
  sleep,
  expectFaunaError,
  firstErrorCode,
  safeStringify,
  faunadb,
  q: faunadb.query,
}
