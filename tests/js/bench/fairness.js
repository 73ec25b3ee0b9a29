'use strict'
// Tenancy fairness bench (not a test: no thresholds). Two tenant databases on one
// server; the quiet tenant runs a closed loop of small queries alone and then while the
// noisy tenant floods the node from another process. Prints the quiet tenant's p50/p99
// in both phases.
//
//   node tests/js/bench/fairness.js [--seconds 10] [--flood 32] [--quiet-priority 1]
//                                   [--quiet mixed|reads|writes] [--noise reads|writes|cpu]
//                                   [--cluster [--via leader|follower]] [--flood-nice N]
//   TALLY_FAIR_SLOTS=0 node tests/js/bench/fairness.js   # admission control off
//
// --quiet: point reads and, one in five, an update (mixed, the default); only point
// reads; only updates. --noise: heavy reads (a 2,000-document Map/Get, the default) or
// heavy writes (each query updates 20 documents), or cpu: no flood, one spinning thread
// per core outside the server (the control: what a busy machine alone does to the quiet
// tenant).
//
// --cluster runs against a 3-member cluster of local processes (tests/js/helpers/cluster.js)
// instead of one node; both tenants talk to the leader, or with --via follower to one
// follower (whose writes are forwarded to the leader). The CPU figure is then the sum
// over the members.
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

const heavyRead = () => q.Count(q.Map(q.Paginate(q.Documents(q.Collection('docs')), { size: 2000 }), r => q.Get(r)))
// Each flood write updates 20 of the noisy tenant's documents, a different slice each
// time, so the flood touches the whole collection.
const heavyWrite = (ids, n) =>
  q.Foreach(
    Array.from({ length: 20 }, (_, j) => q.Ref(q.Collection('docs'), ids[(n * 20 + j) % ids.length])),
    r => q.Update(r, { data: { flood: n } })
  )

// ---- flooder process ----------------------------------------------------------------

async function flood(url, secret, concurrency, noise, ids) {
  const c = client(url, secret)
  let n = 0
  let stop = false
  process.on('message', m => {
    if (m === 'stop') stop = true
  })
  if (noise === 'cpu') {
    // The control: no tenant floods, the machine is just as busy. Spinning workers, one
    // per core, yielding to the event loop every 50 ms so 'stop' is heard.
    const t0 = Date.now()
    const { Worker } = require('node:worker_threads')
    const spin = 'const e=Date.now()+1e9;for(;;){let x=0;for(let i=0;i<1e7;i++)x+=i}'
    const workers = Array.from({ length: require('node:os').availableParallelism() }, () => new Worker(spin, { eval: true }))
    while (!stop) await new Promise(r => setTimeout(r, 50))
    await Promise.all(workers.map(w => w.terminate()))
    process.send({ queries: 0, seconds: (Date.now() - t0) / 1000 })
    process.exit(0)
  }
  const loop = async () => {
    while (!stop) {
      await c.query(noise === 'writes' ? heavyWrite(ids, n) : heavyRead()).catch(() => {})
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

async function measure(c, refs, seconds, kind) {
  const lat = { read: [], write: [] }
  // The server's own view (x-query-time: from receiving the request to answering it),
  // to tell time spent in the server from time spent on the way to and from it.
  const server = []
  const observer = r => server.push(Number(r.responseHeaders['x-query-time']))
  const end = Date.now() + seconds * 1000
  let i = 0
  while (Date.now() < end) {
    const ref = refs[i % refs.length]
    const write = kind === 'writes' || (kind === 'mixed' && i % 5 === 4)
    const t = process.hrtime.bigint()
    if (write) await c.query(q.Update(ref, { data: { n: i } }), { observer })
    else await c.query(q.Get(ref), { observer })
    const ms = Number(process.hrtime.bigint() - t) / 1e6
    ;(write ? lat.write : lat.read).push(ms)
    i++
  }
  const all = [...lat.read, ...lat.write]
  const f = x => (x === undefined ? '-' : x.toFixed(2))
  return {
    queries: all.length,
    p50: f(pct(all, 50)),
    p99: f(pct(all, 99)),
    read_p50: f(pct(lat.read, 50)),
    read_p99: f(pct(lat.read, 99)),
    write_p50: f(pct(lat.write, 50)),
    write_p99: f(pct(lat.write, 99)),
    server_p50: f(pct(server, 50)),
    server_p99: f(pct(server, 99)),
  }
}

/** One node, or a 3-member cluster seen through one member: {url, pids, adminClient, stop}. */
async function startTarget(cluster, via) {
  if (!cluster) {
    const { startServer } = require('../helpers/server')
    const server = await startServer()
    return {
      url: server.url,
      pids: () => [server.proc.pid],
      adminClient: () => server.adminClient(),
      stop: () => server.stop(),
    }
  }
  const { TallyCluster } = require('../helpers/cluster')
  // Writes under a flood wait longer than the test suites' default allows.
  const c = await new TallyCluster({ replicas: 3, writeTimeoutMs: 30_000 }).start()
  try {
    const leader = await c.leader()
    const m = via === 'follower' ? (await c.followers())[0] : leader
    console.error(`cluster: leader ${leader.id}, talking to member ${m.id} (${via})`)
    return {
      url: `http://127.0.0.1:${m.port}`,
      pids: () => c.alive().map(x => x.proc.pid),
      adminClient: () => m.client(120),
      stop: () => c.stop(),
    }
  } catch (e) {
    await c.stop()
    throw e
  }
}

async function main() {
  const seconds = Number(arg('seconds', 10))
  const floodN = Number(arg('flood', 32))
  const quietPriority = Number(arg('quiet-priority', 1))
  const kind = arg('quiet', 'mixed')
  const noise = arg('noise', 'reads')
  const cluster = process.argv.includes('--cluster')
  const via = arg('via', 'leader')
  if (!['mixed', 'reads', 'writes'].includes(kind) || !['reads', 'writes', 'cpu'].includes(noise)) {
    throw new Error('--quiet is mixed, reads or writes; --noise is reads, writes or cpu')
  }
  if (!['leader', 'follower'].includes(via)) throw new Error('--via is leader or follower')
  const server = await startTarget(cluster, via)
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
    await measure(quiet.client, quiet.refs, 2, kind) // warm up
    const idle = await measure(quiet.client, quiet.refs, seconds, kind)

    // The server's CPU seconds over the flood phase (Linux; a cluster's: every member's):
    // with the load generators and anything else on the machine competing, queries per
    // server CPU second compare runs better than queries per second.
    const cpuOf = pid => {
      try {
        const f = require('node:fs').readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
        return (Number(f[11]) + Number(f[12])) / 100
      } catch {
        return NaN
      }
    }
    const cpu = () => server.pids().reduce((sum, pid) => sum + cpuOf(pid), 0)
    const cpu0 = cpu()
    const child = fork(__filename, ['--child', server.url, tenants.noisy.secret, String(floodN), noise])
    // --flood-nice N: run the flooding load generator at OS niceness N, so that on a small
    // machine its own CPU use (a client process, not the server) takes less from the
    // quiet tenant's client.
    if (arg('flood-nice')) require('node:os').setPriority(child.pid, Number(arg('flood-nice')))
    child.send({ ids: tenants.noisy.refs.map(r => r.id) })
    const done = new Promise(r => child.on('message', r))
    await new Promise(r => setTimeout(r, 2000)) // let the flood build up
    const loaded = await measure(quiet.client, quiet.refs, seconds, kind)
    child.send('stop')
    const flooded = await done
    const cpuUsed = cpu() - cpu0

    const slots = process.env.TALLY_FAIR_SLOTS === undefined ? 'default (cores)' : process.env.TALLY_FAIR_SLOTS
    const result = {
      target: cluster ? `3-member cluster, via the ${via}` : 'one node',
      fair_slots: slots,
      quiet_priority: quietPriority,
      quiet: kind,
      noise,
      flood_clients: floodN,
      noisy_queries_per_s: (flooded.queries / flooded.seconds).toFixed(1),
      server_cpu_s: cpuUsed.toFixed(1),
      noisy_queries_per_server_cpu_s: (flooded.queries / cpuUsed).toFixed(1),
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
  new Promise(r => process.once('message', r))
    .then(m => flood(process.argv[3], process.argv[4], Number(process.argv[5]), process.argv[6], m.ids))
    .catch(e => {
    console.error(e)
    process.exit(1)
  })
} else {
  main().catch(e => {
    console.error(e)
    process.exit(1)
  })
}
