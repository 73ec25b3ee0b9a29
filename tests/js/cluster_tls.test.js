'use strict'
// Members that talk mutual TLS (`--peer-cert/--peer-key/--peer-ca`, certificates from
// `tally cluster init-certs`): the bank workload survives a leader kill and a partition
// as over plain HTTP; the peer port takes neither plain HTTP nor the root-key token; a
// peer whose certificate comes from another CA, has expired, names a member that is not
// in the cluster, or names another member than the sender its message claims, is refused
// and the refusal is logged with the reason.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const https = require('node:https')
const path = require('node:path')

const { HOST, sleep, rawRequest } = require('./helpers/server')
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

test('a mutual-TLS cluster keeps every acknowledged transfer through a leader kill and a partition', { timeout: 240_000 }, async t => {
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
    await phase('tls-partition', 4000, async () => {
      await sleep(1000)
      const l = await cluster.leader()
      await l.isolate(true)
      await sleep(2500)
      await l.isolate(false)
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
