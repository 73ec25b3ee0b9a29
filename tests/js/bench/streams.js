'use strict'
// Streams bench (not a test: no thresholds). Starts a server and prints:
//  1. the server's resident memory per idle stream: RSS before and after opening
//     --idle streams (default 2,000) on Documents(c), spread over driver clients of
//     100 streams each (HTTP/2 sessions);
//  2. the commit latency of a closed loop of single-document updates (p50/p99 of the
//     driver round trip) with no stream open, then with --busy document streams
//     (default 200) all watching the document being updated, so every commit makes
//     --busy events.
//
//   node tests/js/bench/streams.js [--idle 2000] [--busy 200] [--writes 300]
//   scripts/bench-streams  (10,000 idle, 1,000 busy, 200 writes: the figures in
//                           docs/streams.md)
//
// Uses target/release/tally (or TALLY_BIN) through the official faunadb driver.

const fs = require('node:fs')
const path = require('node:path')
const { TallyServer, q } = require(path.join(__dirname, '..', 'helpers', 'server'))

function arg(name, dflt) {
  const i = process.argv.lastIndexOf(`--${name}`) // the last one wins (scripts/bench-streams passes defaults first)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}

const IDLE = arg('idle', 2000)
const BUSY = arg('busy', 200)
const WRITES = arg('writes', 300)
const PER_CLIENT = 100

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m[1])
}

/** Open `n` streams on `expr`; resolves once all started. */
async function openStreams(server, n, expr, onVersion) {
  const subs = []
  const starts = []
  for (let i = 0; i < n; i++) {
    if (i % PER_CLIENT === 0) var client = server.adminClient({ http2SessionIdleTime: 600_000 })
    const sub = client.stream(expr)
    starts.push(
      new Promise((resolve, reject) => {
        sub.on('start', resolve)
        sub.on('error', e => reject(e))
        if (onVersion) sub.on('version', onVersion)
      })
    )
    sub.start()
    subs.push(sub)
  }
  await Promise.all(starts)
  return subs
}

async function latency(c, ref) {
  const ms = []
  for (let i = 0; i < WRITES; i++) {
    const t = process.hrtime.bigint()
    await c.query(q.Update(ref, { data: { i } }))
    ms.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  ms.sort((a, b) => a - b)
  const p = f => ms[Math.min(ms.length - 1, Math.floor(ms.length * f))].toFixed(2)
  return { p50: p(0.5), p99: p(0.99) }
}

async function main() {
  const server = new TallyServer()
  await server.start()
  const pid = server.proc.pid
  const admin = server.adminClient()
  await admin.query(q.CreateCollection({ name: 'c' }))
  const ref = q.Ref(q.Collection('c'), '1')
  await admin.query(q.Create(ref, { data: { i: -1 } }))
  await latency(admin, ref) // warm up

  await new Promise(r => setTimeout(r, 500))
  const before = rssKiB(pid)
  const idle = await openStreams(server, IDLE, q.Documents(q.Collection('c')))
  await new Promise(r => setTimeout(r, 1000))
  const after = rssKiB(pid)
  console.log(`idle streams: ${IDLE}; server RSS ${before} KiB -> ${after} KiB; ${(((after - before) * 1024) / IDLE).toFixed(0)} bytes per idle stream`)
  for (const s of idle) s.close()
  await server.closeClients()
  await new Promise(r => setTimeout(r, 500))

  const c = server.adminClient()
  const quiet = await latency(c, ref)
  let events = 0
  const busy = await openStreams(server, BUSY, ref, () => events++)
  const loaded = await latency(c, ref)
  for (let i = 0; i < 200 && events < BUSY * WRITES; i++) await new Promise(r => setTimeout(r, 10))
  console.log(`commit latency, ${WRITES} sequential updates: no streams p50 ${quiet.p50} ms p99 ${quiet.p99} ms`)
  console.log(`                with ${BUSY} streams on the document: p50 ${loaded.p50} ms p99 ${loaded.p99} ms; events delivered ${events} of ${BUSY * WRITES}`)
  for (const s of busy) s.close()
  await server.stop()
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
