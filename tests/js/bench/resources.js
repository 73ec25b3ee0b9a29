'use strict'
// Resource benchmark (issue 13; not a test, CI does not run it): reruns the attacks of
// the issue with bounded counts against a fresh loopback server each, and prints for
// each the server's peak RSS, the worst /ping latency while it ran, and the work done.
// A guard kills the server if its RSS passes --guard-mib (default 2560), so a build
// without the bounds cannot take the machine down; the row then says so.
//
//   node tests/js/bench/resources.js [--bin path/to/tally] [--guard-mib 2560] [--only name,name]

const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const { Worker } = require('node:worker_threads')
const { TallyServer, rawRequest, sleep, HOST, q } = require(path.join(__dirname, '..', 'helpers', 'server'))

const MIB = 1024 * 1024
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : dflt
}
const GUARD = Number(arg('guard-mib', 2560)) * MIB
const BIN = arg('bin', undefined)
const ONLY = arg('only', undefined)

function rssOf(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch (_) {
    return 0
  }
}

/** GET /ping every 100 ms until told to stop; posts the worst latency and failures. */
const PROBER = `
const { parentPort, workerData } = require('node:worker_threads')
const http = require('node:http')
let stop = false, pingMax = 0, pingFail = 0
parentPort.on('message', () => { stop = true })
const once = () => new Promise(resolve => {
  const t0 = Date.now()
  const done = ok => { if (!ok) pingFail++; pingMax = Math.max(pingMax, Date.now() - t0); resolve() }
  const req = http.get({ host: workerData.host, port: workerData.port, path: '/ping', agent: false, timeout: 5000 }, res => {
    res.resume()
    res.on('end', () => done(res.statusCode === 200))
  })
  req.on('timeout', () => req.destroy(new Error('timeout')))
  req.on('error', () => done(false))
})
;(async () => {
  while (!stop) {
    await once()
    await new Promise(r => setTimeout(r, 100))
  }
  parentPort.postMessage({ pingMax, pingFail })
})()
`

/** Sample RSS and /ping while `work` runs; kill the server past the guard. */
async function measure(server, work) {
  const pid = server.proc.pid
  let peak = 0
  let pingMax = 0
  let pingFail = 0
  let guardHit = false
  let running = true
  const sampler = (async () => {
    while (running) {
      const r = rssOf(pid)
      peak = Math.max(peak, r)
      if (r > GUARD && !guardHit) {
        guardHit = true
        server.proc.kill('SIGKILL')
      }
      await sleep(50)
    }
  })()
  // The prober runs on a thread of its own: this one is busy with the attack's clients
  // (reading forty 16 MiB answers stalls its event loop for seconds), which would be
  // counted as the server's latency.
  const prober = new Worker(PROBER, { eval: true, workerData: { host: HOST, port: server.port } })
  const pinger = new Promise(resolve => {
    prober.on('message', m => {
      pingMax = m.pingMax
      pingFail = m.pingFail
      resolve()
    })
    prober.on('error', () => resolve())
  })
  const t0 = Date.now()
  let result
  try {
    result = await work()
  } catch (e) {
    result = { error: e.message }
  }
  const ms = Date.now() - t0
  running = false
  prober.postMessage('stop')
  await Promise.all([sampler, pinger])
  await prober.terminate()
  return { peakMiB: Math.round(peak / MIB), pingMaxMs: pingMax, pingFail, guardHit, ms, ...result }
}

const post = (server, query, timeoutMs = 60_000) =>
  rawRequest(server.port, {
    headers: { authorization: `Bearer ${server.rootKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(q.wrap(query)),
    timeoutMs,
  }).catch(e => ({ status: null, body: e.message }))

const tally = statuses => {
  const out = {}
  for (const s of statuses) out[s] = (out[s] || 0) + 1
  return JSON.stringify(out)
}

const scenarios = {
  // Four copies at once of the 200-byte query that builds a 1.6 GB answer.
  async attack(server) {
    const attack = q.Let(
      { x: q.Repeat('a', 16 * MIB) },
      q.Map(q.NGram(q.Repeat('a', 100), 1, 1), q.Lambda('_', q.Var('x')))
    )
    const rs = await Promise.all([0, 1, 2, 3].map(() => post(server, attack, 90_000)))
    return { work: `answers by status ${tally(rs.map(r => r.status))}` }
  },
  // Forty HTTP/1.1 clients ask for a 16 MiB answer each and never read it (held 5 s).
  async slowReaders(server) {
    const query = JSON.stringify(q.wrap(q.Map(q.NGram(q.Repeat('a', 16), 1, 1), q.Lambda('_', q.Repeat('b', MIB)))))
    const socks = []
    for (let i = 0; i < 40; i++) {
      const s = net.connect({ host: HOST, port: server.port })
      s.on('error', () => {})
      s.pause()
      s.write(
        `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.rootKey}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(query)}\r\n\r\n${query}`
      )
      socks.push(s)
    }
    await sleep(5_000)
    for (const s of socks) s.destroy()
    return { work: '40 unread 16 MiB answers held 5 s' }
  },
  // Eight writers post 2 MiB Do-of-Creates back to back for 15 s.
  async writeFlood(server) {
    await post(server, q.CreateCollection({ name: 'flood' }))
    const pad = 'x'.repeat(1000)
    const body = q.Do(...Array.from({ length: 2000 }, () => q.Create(q.Collection('flood'), { data: { pad } })))
    const statuses = []
    const until = Date.now() + 15_000
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (Date.now() < until) {
          const r = await post(server, body, 60_000)
          statuses.push(r.status)
          if (r.status !== 200) await sleep(200)
        }
      })
    )
    // Is the memory given back once the flood is over?
    await sleep(12_000)
    const settled = Math.round(rssOf(server.proc.pid) / MIB)
    return { work: `2 MiB writes by status ${tally(statuses)}; RSS 12 s after: ${settled} MiB` }
  },
  // Three thousand idle connections, then a query.
  async connFlood(server) {
    const socks = []
    let closed = 0
    for (let i = 0; i < 3000; i++) {
      const s = net.connect({ host: HOST, port: server.port })
      s.on('error', () => {})
      s.on('close', () => closed++)
      socks.push(s)
    }
    await sleep(3_000)
    const r = await post(server, q.Add(1, 2), 10_000)
    for (const s of socks) s.destroy()
    return { work: `3000 idle sockets, ${closed} closed by the server; a query then: ${r.status}` }
  },
  // Eight clients run heavy queries of few steps back to back for 8 s: each step an
  // NGram of a 300 KB string (600,000 strings, a few hundred ms). Run inline on an async
  // thread, each stalls /ping for its whole evaluation.
  async heavySteps(server) {
    const big = q.Count(q.NGram(q.Repeat('a', 300000), 1, 2))
    const statuses = []
    const until = Date.now() + 8_000
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (Date.now() < until) statuses.push((await post(server, q.Add(big, big), 120_000)).status)
      })
    )
    return { work: `heavy queries by status ${tally(statuses)}` }
  },
  // Forty clients at once ask for a 16 MiB answer each and read it.
  async bigAnswers(server) {
    const query = q.Map(q.NGram(q.Repeat('a', 16), 1, 1), q.Lambda('_', q.Repeat('b', MIB)))
    const rs = await Promise.all(Array.from({ length: 40 }, () => post(server, query, 120_000)))
    const whole = rs.filter(r => r.status === 200 && r.body.length > 16 * MIB).length
    return { work: `16 MiB answers by status ${tally(rs.map(r => r.status))}, ${whole} read whole` }
  },
  // Twenty documents of 4 MiB; a page of one ref, and a count.
  async listing(server) {
    await post(server, q.CreateCollection({ name: 'big' }))
    for (let i = 0; i < 20; i++) await post(server, q.Create(q.Collection('big'), { data: { s: q.Repeat('a', 4 * MIB) } }))
    let t0 = Date.now()
    const page = await post(server, q.Paginate(q.Documents(q.Collection('big')), { size: 1 }))
    const pageMs = Date.now() - t0
    t0 = Date.now()
    const count = await post(server, q.Count(q.Documents(q.Collection('big'))))
    const countMs = Date.now() - t0
    return {
      work:
        `page of 1: ${pageMs} ms, ${page.headers && page.headers['x-byte-read-ops']} read ops; ` +
        `count: ${countMs} ms, ${count.headers && count.headers['x-byte-read-ops']} read ops`,
    }
  },
}

async function main() {
  const rows = []
  for (const [name, run] of Object.entries(scenarios)) {
    if (ONLY && !ONLY.split(',').includes(name)) continue
    const server = new TallyServer({ bin: BIN })
    await server.start()
    const r = await measure(server, () => run(server))
    await server.stop()
    rows.push({ name, ...r })
    console.log(JSON.stringify(rows[rows.length - 1]))
  }
  console.log('\n| scenario | peak RSS MiB | worst /ping ms | ping failures | guard hit | time ms | work |')
  console.log('|---|---|---|---|---|---|---|')
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.peakMiB} | ${r.pingMaxMs} | ${r.pingFail} | ${r.guardHit ? 'yes' : 'no'} | ${r.ms} | ${r.work || r.error} |`
    )
  }
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
