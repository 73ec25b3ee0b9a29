'use strict'
// Members that talk mutual TLS (`--peer-cert/--peer-key/--peer-ca`, certificates from
// `tally cluster init-certs`): the bank workload survives kill -9 of the leader, of a
// follower and of every member at once, and a partition, as over plain HTTP (the whole of
// cluster.test.js also runs over mutual TLS with TALLY_TEST_PEER_TLS=1); the peer port
// takes neither plain HTTP nor the root-key token; a peer whose certificate comes from
// another CA, has expired, names a member that is not in the cluster, or names another
// member than the sender its message claims, is refused and the refusal is logged with
// the reason. `tally dev-cluster` talks mutual TLS by
// default, as the README's one-command cluster promises.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawn, spawnSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const https = require('node:https')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const { HOST, sleep, rawRequest, faunadb } = require('./helpers/server')
const { TallyCluster, BIN } = require('./helpers/cluster')
const { setupBank, runLoad, verifyBank } = require('./helpers/bank')

const sha256 = s => crypto.createHash('sha256').update(s).digest('hex')

/** POST to a member's peer port over TLS, presenting `cert`/`key`; resolves {status, body}. */
function peerPost(port, { ca, cert, key }, p, body = 'null') {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: HOST, port, method: 'POST', path: p, agent: false,
      ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key),
      servername: 'member-1.tally.invalid', headers: { 'content-type': 'application/json' },
    }, res => {
      const chunks = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }))
    })
    req.setTimeout(5000, () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end(body)
  })
}

/** `init-certs` for `members` into `out`, signed by the CA in `caDir` if given (else a new one). */
function issue(out, members, { caDir, expired = false } = {}) {
  fs.mkdirSync(out, { recursive: true })
  if (caDir) for (const f of ['ca.pem', 'ca.key']) fs.copyFileSync(path.join(caDir, f), path.join(out, f))
  execFileSync(BIN, ['cluster', 'init-certs', '--members', members, '--out', out, ...(expired ? ['--expired'] : [])], { stdio: 'ignore' })
  return id => ({ cert: path.join(out, `member-${id}.pem`), key: path.join(out, `member-${id}.key`) })
}

async function logged(member, text, ms = 10_000) {
  const deadline = Date.now() + ms
  while (!member.output.includes(text)) {
    if (Date.now() > deadline) assert.fail(`member ${member.id} did not log ${JSON.stringify(text)}:\n${member.output.slice(-3000)}`)
    await sleep(100)
  }
}

test('a mutual-TLS cluster keeps every acknowledged transfer through kills of the leader, a follower and every member, and a partition', { timeout: 240_000 }, async t => {
  const cluster = await new TallyCluster({ replicas: 3, peerTls: true }).start()
  t.after(() => cluster.stop())
  try {
    // The peer port speaks mutual TLS only: plain HTTP, even with the token that the
    // root key would give, gets no answer.
    const m1 = cluster.member(1)
    const token = sha256(`tally-peer-token/v1/${sha256(cluster.rootKey)}`)
    await assert.rejects(rawRequest(m1.peerPort, { method: 'POST', path: '/tally/head', headers: { 'x-tally-peer-token': token }, timeoutMs: 5000 }))

    await setupBank(await cluster.leader())
    const allAcked = []
    const phase = async (name, ms, fault) => {
      const { acked, stats } = await runLoad(cluster, name, ms, fault)
      allAcked.push(...acked)
      t.diagnostic(`${name}: ${JSON.stringify(stats)}`)
      assert.ok(stats.ok > 20, `${name}: the workload made progress (${JSON.stringify(stats)})`)
      const head = await verifyBank(cluster, allAcked)
      t.diagnostic(`${name}: verified ${allAcked.length} acknowledged transfers; head ${head.height}`)
    }
    await phase('tls-kill-leader', 4000, async () => {
      await sleep(1000)
      const l = await cluster.leader()
      await l.kill9()
      await sleep(2000)
      l.start()
      await l.waitUp()
    })
    await phase('tls-kill-follower', 4000, async () => {
      await sleep(1000)
      const f = (await cluster.followers())[0]
      await f.kill9()
      await sleep(1500)
      f.start()
      await f.waitUp()
    })
    await phase('tls-partition', 4000, async () => {
      await sleep(1000)
      const l = await cluster.leader()
      await l.isolate(true)
      await sleep(2500)
      await l.isolate(false)
    })
    await phase('tls-restart-all', 4000, async () => {
      await sleep(1000)
      await Promise.all(cluster.members.map(m => m.kill9()))
      for (const m of cluster.members) m.start()
      for (const m of cluster.members) await m.waitUp()
    })
  } catch (e) {
    t.diagnostic(cluster.logs())
    throw e
  }
})

test('peers with a certificate from another CA, an expired one, or one for another member id are refused and logged', { timeout: 120_000 }, async t => {
  const cluster = await new TallyCluster({ replicas: 3, peerTls: true }).start()
  t.after(() => cluster.stop())
  const m1 = cluster.member(1)
  const ca = path.join(cluster.certs, 'ca.pem')
  const own = id => ({ ca, cert: path.join(cluster.certs, `member-${id}.pem`), key: path.join(cluster.certs, `member-${id}.key`) })
  try {
    // Control: member 2's own certificate is admitted.
    const ok = await peerPost(m1.peerPort, own(2), '/tally/head')
    assert.equal(ok.status, 200, ok.body)

    const other = issue(path.join(cluster.dir, 'other-ca'), '2')
    await assert.rejects(peerPost(m1.peerPort, { ca, ...other(2) }, '/tally/head'))
    await logged(m1, 'its certificate is not signed by the cluster CA')

    const expired = issue(path.join(cluster.dir, 'expired'), '2', { caDir: cluster.certs, expired: true })
    await assert.rejects(peerPost(m1.peerPort, { ca, ...expired(2) }, '/tally/head'))
    await logged(m1, 'its certificate has expired')

    const stranger = issue(path.join(cluster.dir, 'stranger'), '9', { caDir: cluster.certs })
    const r9 = await peerPost(m1.peerPort, { ca, ...stranger(9) }, '/tally/head')
    assert.equal(r9.status, 403)
    assert.match(r9.body, /member 9 is not in this cluster's membership/)
    await logged(m1, "member 9 is not in this cluster's membership")

    // Member 2's genuine certificate, carrying a vote that claims to come from member 3.
    const vote = { vote: { leader_id: { term: 1, node_id: 3 }, committed: false }, last_log_id: null }
    const forged = await peerPost(m1.peerPort, own(2), '/raft/vote', JSON.stringify(vote))
    assert.equal(forged.status, 403, forged.body)
    assert.match(forged.body, /member 2's certificate sent a message claiming to be from member 3/)
    await logged(m1, "member 2's certificate sent a message claiming to be from member 3")

    // A member given another member's certificate refuses to start, saying why.
    const wrong = spawnSync(BIN, ['serve', '--node-id', '2', '--cluster', cluster.list(), '--listen', `${HOST}:1`,
      '--data-dir', path.join(cluster.dir, 'wrong'), '--root-key', cluster.rootKey,
      '--peer-cert', own(3).cert, '--peer-key', own(3).key, '--peer-ca', ca], { timeout: 30_000, encoding: 'utf8' })
    assert.notEqual(wrong.status, 0)
    assert.match(wrong.stderr, /is not for member 2: it must carry the DNS name member-2\.tally\.invalid/)

    // The cluster was not disturbed.
    const leader = await cluster.leader()
    const w = await leader.post('/', { create_collection: { object: { name: 'after_refusals' } } })
    assert.equal(w.status, 200, w.raw)
  } catch (e) {
    t.diagnostic(cluster.logs())
    throw e
  }
})

/** Resolves whether `port` on loopback can be bound now. */
const canBind = port =>
  new Promise(resolve => {
    const srv = net.createServer()
    srv.once('error', () => resolve(false))
    srv.listen(port, HOST, () => srv.close(() => resolve(true)))
  })

/** A base port B with B..B+n-1 (clients) and B+100..B+100+n-1 (peers) free, as dev-cluster lays them out. */
async function devClusterBase(n) {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 11000)
    const ports = []
    for (let i = 0; i < n; i++) ports.push(base + i, base + 100 + i)
    let free = true
    for (const p of ports) free = free && (await canBind(p))
    if (free) return base
  }
  throw new Error('no free port range for dev-cluster')
}

test('`tally dev-cluster` talks mutual TLS by default; a member started without the root key serves it', { timeout: 120_000 }, async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-devc-'))
  const base = await devClusterBase(3)
  const rootKey = 'tally-devc-' + crypto.randomBytes(8).toString('hex')
  const proc = spawn(BIN, ['dev-cluster', '--replicas', '3', '--base-port', String(base), '--data-dir', dir, '--root-key', rootKey], {
    env: { ...process.env, TALLY_ROOT_KEY: '' },
  })
  let out = ''
  proc.stdout.on('data', d => (out += d))
  proc.stderr.on('data', d => (out += d))
  const exited = new Promise(r => proc.on('exit', code => r(code)))
  t.after(async () => {
    if (proc.exitCode === null) proc.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  })
  try {
    for (let i = 0; i < 200 && !out.includes('Ctrl-C stops them all'); i++) await sleep(100)
    assert.match(out, /members talk mutual TLS with the certificates in /)
    assert.match(out, /given to member 1 only/)
    for (const f of ['ca.pem', 'member-1.pem', 'member-2.key', 'member-3.pem']) assert.ok(fs.existsSync(path.join(dir, 'certs', f)), f)
    const ca = path.join(dir, 'certs', 'ca.pem')
    const own = id => ({ ca, cert: path.join(dir, 'certs', `member-${id}.pem`), key: path.join(dir, 'certs', `member-${id}.key`) })
    // The peer port speaks mutual TLS only, and admits a member's certificate.
    await assert.rejects(rawRequest(base + 100, { method: 'POST', path: '/tally/head', timeoutMs: 5000 }))
    let head
    for (let i = 0; i < 300; i++) {
      head = await peerPost(base + 100, own(2), '/tally/head').catch(e => ({ status: 0, body: String(e) }))
      if (head.status === 200) break
      await sleep(100)
    }
    assert.equal(head.status, 200, head.body)
    // The official driver writes through member 3 (never given the root key) and reads on member 2.
    const q = faunadb.query
    const client = port => new faunadb.Client({ secret: rootKey, domain: HOST, port, scheme: 'http', timeout: 15, checkNewVersion: false })
    let made
    for (let i = 0; i < 150 && !made; i++) {
      made = await client(base + 2).query(q.CreateCollection({ name: 'dev' })).catch(() => null)
      if (!made) await sleep(200)
    }
    assert.ok(made, `member 3 never accepted the root key's write:\n${out.slice(-3000)}`)
    const doc = await client(base + 2).query(q.Create(q.Collection('dev'), { data: { n: 5 } }))
    let read
    for (let i = 0; i < 100 && !read; i++) {
      read = await client(base + 1).query(q.Get(doc.ref)).catch(() => null)
      if (!read) await sleep(100)
    }
    assert.equal(read.data.n, 5)
  } catch (e) {
    t.diagnostic(out.slice(-4000))
    throw e
  }
  proc.kill('SIGTERM')
  assert.equal(await Promise.race([exited, sleep(20_000).then(() => 'hung')]), 0)
  assert.match(out, /tally dev-cluster: stopped/)
})
