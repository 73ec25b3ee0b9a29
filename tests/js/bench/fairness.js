'use strict'
// Tenancy fairness bench (not a test: no thresholds). Two tenant databases on one
// server; the quiet tenant runs a closed loop of small queries (point reads and, one in
// five, an update) alone and then while the noisy tenant floods the node with heavy
// reads from another process. Prints the quiet tenant's p50/p99 in both phases.
//
//   node tests/js/bench/fairness.js [--seconds 10] [--flood 32] [--quiet-priority 1]
//   TALLY_FAIR_SLOTS=0 node tests/js/bench/fairness.js   # admission control off
//
// Uses target/release/tally (or TALLY_BIN) through the official faunadb driver.

const { fork } = require('node:child_process')
const path = require('node:path')

const faunadb = require(path.join(__dirname, '..', 'node_modules', 'faunadb'))
const q = faunadb.query

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : dflt
}

function client(url, secret) {
  const u = new URL(url)
  return new faunadb.Client({
    secret,
    domain: u.hostname,
    port: Number(u.port),
    scheme: 'http',
    timeout: 120,
    checkNewVersion: false,
  })
}

const heavy = () => q.Count(q.Map(q.Paginate(q.Documents(q.Collection('docs')), { size: 2000 }), r => q.Get(r)))

// ---- flooder process ----------------------------------------------------------------

async function flood(url, secret, concurrency) {
  const c = client(url, secret)
  let n = 0
  let stop = false
  process.on('message', m => {
    if (m === 'stop') stop = true
  })
  const loop = async () => {
    while (!stop) {
      await c.query(heavy()).catch(() => {})
      n++
    }
  }
  const t0 = Date.now()
  await Promise.all(Array.from({ length: concurrency }, loop))
  process.send({ queries: n, seconds: (Date.now() - t0) / 1000 })
  await c.close({ force: true })
  process.exit(0)
}

// ---- driver ---------------------------------------------------------------------------

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}

async function measure(c, refs, seconds) {
  const lat = { read: [], write: [] }
  const end = Date.now() + seconds * 1000
  let i = 0
  while (Date.now() < end) {
    const ref = refs[i % refs.length]
    const write = i % 5 === 4
    const t = process.hrtime.bigint()
    if (write) await c.query(q.Update(ref, { data: { n: i } }))
    else await c.query(q.Get(ref))
    const ms = Number(process.hrtime.bigint() - t) / 1e6
    ;(write ? lat.write : lat.read).push(ms)
    i++
  }
  const all = [...lat.read, ...lat.write]
  const f = x => x.toFixed(2)
  return {
    queries: all.length,
    p50: f(pct(all, 50)),
    p99: f(pct(all, 99)),
    read_p50: f(pct(lat.read, 50)),
    read_p99: f(pct(lat.read, 99)),
    write_p50: f(pct(lat.write, 50)),
    write_p99: f(pct(lat.write, 99)),
  }
}

async function main() {
  const { startServer } = require('../helpers/server')
  const seconds = Number(arg('seconds', 10))
  const floodN = Number(arg('flood', 32))
  const quietPriority = Number(arg('quiet-priority', 1))
  const server = await startServer()
  try {
    const root = server.adminClient()
    const tenants = {}
    for (const [name, priority, docs] of [
      ['noisy', 1, 2000],
      ['quiet', quietPriority, 100],
    ]) {
      await root.query(q.CreateDatabase({ name, priority }))
      const k = await root.query(q.CreateKey({ database: q.Database(name), role: 'server' }))
      const c = client(server.url, k.secret)
      await c.query(q.CreateCollection({ name: 'docs' }))
      const refs = []
      for (let i = 0; i < docs; i += 500) {
        const made = await c.query(
          q.Map(Array.from({ length: Math.min(500, docs - i) }, (_, j) => i + j), n =>
            q.Select('ref', q.Create(q.Collection('docs'), { data: { n, pad: 'x'.repeat(200) } }))
          )
        )
        refs.push(...made)
      }
      tenants[name] = { secret: k.secret, client: c, refs }
    }
    const quiet = tenants.quiet
    await measure(quiet.client, quiet.refs, 2) // warm up
    const idle = await measure(quiet.client, quiet.refs, seconds)

    const child = fork(__filename, ['--child', server.url, tenants.noisy.secret, String(floodN)])
    const done = new Promise(r => child.on('message', r))
    await new Promise(r => setTimeout(r, 2000)) // let the flood build up
    const loaded = await measure(quiet.client, quiet.refs, seconds)
    child.send('stop')
    const flooded = await done

    const slots = process.env.TALLY_FAIR_SLOTS === undefined ? 'default (cores)' : process.env.TALLY_FAIR_SLOTS
    const result = {
      fair_slots: slots,
      quiet_priority: quietPriority,
      flood_clients: floodN,
      noisy_queries_per_s: (flooded.queries / flooded.seconds).toFixed(1),
      quiet_idle_ms: idle,
      quiet_under_flood_ms: loaded,
      p99_ratio: (Number(loaded.p99) / Number(idle.p99)).toFixed(2),
    }
    console.log(JSON.stringify(result, null, 2))
    for (const t of Object.values(tenants)) await t.client.close({ force: true })
  } finally {
    await server.stop()
  }
}

if (process.argv[2] === '--child') {
  flood(process.argv[3], process.argv[4], Number(process.argv[5])).catch(e => {
    console.error(e)
    process.exit(1)
  })
} else {
  main().catch(e => {
    console.error(e)
    process.exit(1)
  })
}
