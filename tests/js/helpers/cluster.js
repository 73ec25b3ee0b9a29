'use strict'
// Starts a local Tally cluster (separate `tally serve --node-id … --cluster …` processes on
// loopback, fault injection on) for the cluster suites, and gives the tests the means to
// kill -9, restart, isolate and inspect members.

const { spawn, execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { HOST, freePort, rawRequest, sleep, faunadb } = require('./server')

const BIN = process.env.TALLY_BIN
  ? path.resolve(path.join(__dirname, '..', '..', '..'), process.env.TALLY_BIN)
  : path.join(__dirname, '..', '..', '..', 'target', 'release', 'tally')

class Member {
  constructor(cluster, id, clientPort, peerPort) {
    this.cluster = cluster
    this.id = id
    this.port = clientPort
    this.peerPort = peerPort
    this.dataDir = path.join(cluster.dir, `node${id}`)
    this.proc = null
    this.output = ''
    this.exitInfo = null
    this.env = {}
    this.extraArgs = []
  }

  get alive() {
    return this.proc !== null && this.exitInfo === null
  }

  args() {
    const a = ['serve', '--node-id', String(this.id), '--listen', `${HOST}:${this.port}`,
      '--data-dir', this.dataDir, '--fault-injection',
      '--write-timeout-ms', String(this.cluster.writeTimeoutMs), '--cluster', this.cluster.list()]
    const keyMembers = this.cluster.rootKeyMembers
    if (!keyMembers || keyMembers.includes(this.id)) a.push('--root-key', this.cluster.flagKey)
    if (!this.cluster.initial.includes(this.id)) a.push('--peer-listen', `${HOST}:${this.peerPort}`)
    if (this.cluster.certs) {
      const f = name => path.join(this.cluster.certs, name)
      a.push('--peer-cert', f(`member-${this.id}.pem`), '--peer-key', f(`member-${this.id}.key`), '--peer-ca', f('ca.pem'))
    }
    return a.concat(this.cluster.extraArgs, this.extraArgs)
  }

  start() {
    this.exitInfo = null
    const proc = spawn(BIN, this.args(), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_BACKTRACE: '1', ...this.env },
    })
    this.proc = proc
    const onData = c => {
      this.output += c.toString('utf8')
      if (this.output.length > 400_000) this.output = this.output.slice(-200_000)
      if (process.env.TALLY_SERVER_LOG) process.stderr.write(`[m${this.id}] ${c}`)
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', onData)
    this.exited = new Promise(resolve => proc.on('exit', (code, signal) => {
      this.exitInfo = { code, signal }
      resolve(this.exitInfo)
    }))
  }

  async waitUp(ms = 30_000) {
    const deadline = Date.now() + ms
    while (Date.now() < deadline) {
      if (this.exitInfo) throw new Error(`member ${this.id} exited ${JSON.stringify(this.exitInfo)}:\n${this.output.slice(-3000)}`)
      try {
        const r = await rawRequest(this.port, { method: 'GET', path: '/ping', timeoutMs: 1000 })
        if (r.status === 200) return
      } catch (_) {}
      await sleep(100)
    }
    throw new Error(`member ${this.id} did not come up:\n${this.output.slice(-3000)}`)
  }

  async kill9() {
    if (!this.alive) return
    this.proc.kill('SIGKILL')
    await this.exited
  }

  async stop() {
    if (!this.alive) return
    this.proc.kill('SIGTERM')
    const t = setTimeout(() => this.proc && this.proc.kill('SIGKILL'), 10_000)
    await this.exited
    clearTimeout(t)
  }

  async get(p, timeoutMs = 5000) {
    const r = await rawRequest(this.port, {
      method: 'GET', path: p, timeoutMs, headers: { authorization: `Bearer ${this.cluster.rootKey}` },
    })
    return { status: r.status, body: r.body ? JSON.parse(r.body) : null }
  }

  async post(p, body, opts = {}) {
    const r = await rawRequest(this.port, {
      method: opts.method || 'POST', path: p, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.cluster.rootKey}`, ...(opts.headers || {}) },
      timeoutMs: opts.timeoutMs || 30_000,
    })
    let parsed = null
    try { parsed = JSON.parse(r.body) } catch (_) {}
    return { status: r.status, body: parsed, headers: r.headers, raw: r.body }
  }

  status() { return this.get('/cluster/status') }
  head() { return this.get('/ledger/head') }
  isolate(on) { return this.post('/admin/faults', { isolate: on }) }

  /** An official-driver client for this member (fresh, so a restart leaves no dead session). */
  client(timeoutS = 15) {
    return new faunadb.Client({
      secret: this.cluster.rootKey, domain: HOST, port: this.port, scheme: 'http',
      timeout: timeoutS, checkNewVersion: false,
    })
  }
}

class TallyCluster {
  constructor({ replicas = 3, spare = 0, extraArgs = [], writeTimeoutMs = 4000, peerTls = process.env.TALLY_TEST_PEER_TLS === '1', rootKeyMembers = null } = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-cluster-'))
    // With peerTls, members talk mutual TLS with certificates from `tally cluster init-certs`.
    // TALLY_TEST_PEER_TLS=1 makes it the default, to run every cluster test over mutual TLS.
    this.certs = null
    if (peerTls) {
      this.certs = path.join(this.dir, 'certs')
      const ids = Array.from({ length: replicas + spare }, (_, i) => i + 1).join(',')
      execFileSync(BIN, ['cluster', 'init-certs', '--members', ids, '--out', this.certs], { stdio: 'ignore' })
    }
    // `rootKey` authenticates the helpers' requests (set it after a rotation);
    // `flagKey` is the --root-key given to the members in `rootKeyMembers` (all if null).
    this.rootKey = 'tally-cluster-root-' + crypto.randomBytes(8).toString('hex')
    this.flagKey = this.rootKey
    this.rootKeyMembers = rootKeyMembers
    this.extraArgs = extraArgs
    this.writeTimeoutMs = writeTimeoutMs
    this.replicas = replicas
    this.spare = spare
    this.members = []
    this.initial = []
  }

  list() {
    return this.members.filter(m => this.initial.includes(m.id)).map(m => `${m.id}=${HOST}:${m.peerPort}`).join(',')
  }

  async start() {
    for (let i = 1; i <= this.replicas + this.spare; i++) {
      this.members.push(new Member(this, i, await freePort(), await freePort()))
      if (i <= this.replicas) this.initial.push(i)
    }
    for (const m of this.members.slice(0, this.replicas)) m.start()
    for (const m of this.members.slice(0, this.replicas)) await m.waitUp()
    await this.leader()
    await this.rootKeyKnown()
    return this
  }

  /** Wait until every live member knows the cluster's root key (the bootstrap record,
   *  logged by a member started with --root-key, reached it; docs/cluster.md). */
  async rootKeyKnown(ms = 30_000) {
    const deadline = Date.now() + ms
    for (const m of this.alive()) {
      for (;;) {
        try {
          if ((await m.status()).status === 200) break
        } catch (_) {}
        if (Date.now() > deadline) throw new Error(`member ${m.id} does not know the root key:\n${m.output.slice(-3000)}`)
        await sleep(100)
      }
    }
  }

  member(id) { return this.members.find(m => m.id === id) }
  alive() { return this.members.filter(m => m.alive) }

  /** The member that leads, as seen by a majority of live members (waits for an election). */
  async leader(ms = 30_000) {
    const deadline = Date.now() + ms
    while (Date.now() < deadline) {
      for (const m of this.alive()) {
        try {
          const s = await m.status()
          if (s.body && s.body.state === 'Leader' && !s.body.isolated) return m
        } catch (_) {}
      }
      await sleep(100)
    }
    throw new Error('no leader elected')
  }

  async followers() {
    const l = await this.leader()
    return this.alive().filter(m => m.id !== l.id)
  }

  /** Wait until every live member reports the same head, stable for a moment. */
  async converge(ms = 60_000) {
    const deadline = Date.now() + ms
    let last = ''
    let stableSince = 0
    while (Date.now() < deadline) {
      const heads = []
      for (const m of this.alive()) {
        try { heads.push((await m.head()).body) } catch (_) { heads.push(null) }
      }
      const key = JSON.stringify(heads.map(h => h && [h.height, h.hash]))
      const same = heads.every(h => h && h.hash === heads[0].hash)
      if (same && key === last) {
        if (Date.now() - stableSince > 800) return heads[0]
      } else {
        stableSince = Date.now()
      }
      last = key
      await sleep(200)
    }
    throw new Error(`members did not converge: ${last}`)
  }

  async stop() {
    await Promise.all(this.members.map(m => m.stop().catch(() => {})))
    if (!process.env.TALLY_KEEP_DATA) fs.rmSync(this.dir, { recursive: true, force: true })
  }

  logs() {
    return this.members.map(m => `--- member ${m.id} ---\n${m.output.slice(-4000)}`).join('\n')
  }
}

module.exports = { TallyCluster, Member, BIN }
