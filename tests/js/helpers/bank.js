'use strict'
// The bank workload of the cluster suites: 100 accounts, concurrent idempotent transfers
// through the official driver while faults run, and the invariants checked on every member
// (same ledger, total unchanged, every acknowledged transfer present once).

const assert = require('node:assert/strict')

const { q, sleep } = require('./server')

const ACCOUNTS = 100
const START_BALANCE = 1000
const WORKERS = 8

const acct = i => q.Ref(q.Collection('accounts'), String(i))
const log = (...a) => process.env.TALLY_TEST_VERBOSE && console.error(new Date().toISOString(), ...a)

async function setupBank(m) {
  const c = m.client()
  await c.query(q.CreateCollection({ name: 'accounts' }))
  await c.query(q.CreateCollection({ name: 'transfers' }))
  await c.query(q.CreateIndex({ name: 'transfers_by_id', source: q.Collection('transfers'),
    terms: [{ field: ['data', 'id'] }], unique: true }))
  await c.query(q.CreateIndex({ name: 'transfer_rows', source: q.Collection('transfers'),
    values: [{ field: ['data', 'id'] }, { field: ['data', 'from'] }, { field: ['data', 'to'] }, { field: ['data', 'amount'] }] }))
  const creates = []
  for (let i = 1; i <= ACCOUNTS; i++) creates.push(q.Create(acct(i), { data: { balance: START_BALANCE } }))
  await c.query(q.Do(...creates))
  c.close && (await Promise.resolve(c.close({ force: true })).catch(() => {}))
}

// Idempotent: a retry of a transfer that was applied answers 'dup' and changes nothing.
function transfer(id, from, to, amount) {
  const bal = v => q.Select(['data', 'balance'], q.Var(v))
  return q.If(q.Exists(q.Match(q.Index('transfers_by_id'), id)), 'dup',
    q.Let({ a: q.Get(acct(from)), b: q.Get(acct(to)) },
      q.If(q.LT(bal('a'), amount), 'insufficient',
        q.Do(
          q.Update(acct(from), { data: { balance: q.Subtract(bal('a'), amount) } }),
          q.Update(acct(to), { data: { balance: q.Add(bal('b'), amount) } }),
          q.Create(q.Collection('transfers'), { data: { id, from, to, amount } }),
          'ok'))))
}

/** Run the workload for `ms` while `fault()` runs; resolves the transfers acknowledged. */
async function runLoad(cluster, phase, ms, fault) {
  const acked = []
  const stats = { ok: 0, dup: 0, insufficient: 0, errors: 0, unknown: 0, unavailable: 0 }
  let stop = false
  // One driver client per member process; a restarted member gets a fresh one and the
  // old one is closed, so requests pending on a killed process fail instead of hanging.
  const clients = new Map()
  const clientFor = m => {
    const pid = m.proc && m.proc.pid
    const have = clients.get(m.id)
    if (have && have.pid === pid) return have.client
    if (have) Promise.resolve(have.client.close({ force: true })).catch(() => {})
    const client = m.client(8)
    clients.set(m.id, { pid, client })
    return client
  }
  const worker = async w => {
    for (let n = 0; !stop; n++) {
      const id = `${phase}-${w}-${n}`
      const from = 1 + Math.floor(Math.random() * ACCOUNTS)
      const to = 1 + ((from + Math.floor(Math.random() * (ACCOUNTS - 1))) % ACCOUNTS)
      const amount = 1 + Math.floor(Math.random() * 20)
      let done = false
      for (let attempt = 0; attempt < 40 && !done; attempt++) {
        const live = cluster.alive()
        if (live.length === 0) { await sleep(100); continue }
        const m = live[Math.floor(Math.random() * live.length)]
        try {
          const t0 = Date.now()
          let timer
          const r = await Promise.race([
            clientFor(m).query(transfer(id, from, to, amount)),
            new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`no answer from member ${m.id} in 10 s`)), 10_000) }),
          ]).finally(() => clearTimeout(timer))
          if (Date.now() - t0 > 3000) log(phase, `slow answer from member ${m.id}: ${Date.now() - t0} ms`)
          stats[r] = (stats[r] || 0) + 1
          if (r === 'ok' || r === 'dup') acked.push({ id, from, to, amount })
          done = true
        } catch (e) {
          stats.errors++
          log(phase, `member ${m.id}:`, e.name, e.message && e.message.slice(0, 160))
          if (e.requestResult && e.requestResult.statusCode === 503) stats.unavailable++
          await sleep(100)
        }
      }
      if (!done) stats.unknown++
    }
  }
  const workers = Array.from({ length: WORKERS }, (_, w) => worker(w))
  log(phase, 'load started')
  await fault()
  log(phase, 'fault done', JSON.stringify(stats))
  await sleep(ms)
  stop = true
  await Promise.all(workers)
  log(phase, 'load stopped', JSON.stringify(stats))
  for (const { client } of clients.values()) await Promise.resolve(client.close({ force: true })).catch(() => {})
  return { acked, stats }
}

/** Every invariant, checked on every live member through its own client. */
async function verifyBank(cluster, acked) {
  const head = await cluster.converge()
  log('converged', JSON.stringify(head))
  for (const m of cluster.alive()) {
    const c = m.client()
    const rows = (await c.query(q.Paginate(q.Match(q.Index('transfer_rows')), { size: 100000 }))).data
    const ids = new Set(rows.map(r => r[0]))
    assert.equal(ids.size, rows.length, `member ${m.id}: a transfer id appears twice`)
    for (const a of acked) assert.ok(ids.has(a.id), `member ${m.id}: acknowledged transfer ${a.id} is missing`)
    const expected = new Array(ACCOUNTS + 1).fill(START_BALANCE)
    for (const [, from, to, amount] of rows) { expected[from] -= amount; expected[to] += amount }
    const balances = (await c.query(q.Map(q.Paginate(q.Documents(q.Collection('accounts')), { size: 1000 }),
      q.Lambda('r', [q.Select(['id'], q.Var('r')), q.Select(['data', 'balance'], q.Get(q.Var('r')))])))).data
    assert.equal(balances.length, ACCOUNTS)
    let total = 0
    for (const [id, b] of balances) {
      total += b
      assert.equal(b, expected[Number(id)], `member ${m.id}: account ${id} balance disagrees with its transfers (applied twice or lost)`)
    }
    assert.equal(total, ACCOUNTS * START_BALANCE, `member ${m.id}: total balance changed`)
    const h = (await m.head()).body
    assert.equal(h.hash, head.hash, `member ${m.id}: head hash differs`)
    await Promise.resolve(c.close({ force: true })).catch(() => {})
  }
  return head
}

module.exports = { ACCOUNTS, START_BALANCE, setupBank, transfer, runLoad, verifyBank }
