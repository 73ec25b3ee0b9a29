'use strict'
// Overload benchmark (issue 13 item 5; not a test, CI does not run it): throughput of
// completed long reads when more of them run at once than the machine can finish in
// their timeout. Loads --docs documents into one collection of a fresh loopback server,
// times one `Map(Paginate(Documents(c), {size}), Lambda("r", Get(Var("r"))))` alone, then
// sends 1×, 5× and 50× that load at once (--levels), each query with
// `X-Query-Timeout: --timeout-ms`, and prints for each level the queries completed, timed
// out while running, refused before starting (waited their whole timeout for a slot),
// refused as overload (`503`: the answers waiting to be encoded passed the in-flight
// budget), the time of the first completion and the wall time. Each level is bounded by the timeout (plus a few seconds).
//
//   node tests/js/bench/overload.js [--bin path/to/tally] [--docs 20000] [--size 20000]
//                                   [--levels 1,5,50] [--timeout-ms 10000]

const path = require('node:path')
const { TallyServer, rawRequest, q } = require(path.join(__dirname, '..', 'helpers', 'server'))

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : dflt
}
const BIN = arg('bin', undefined)
const DOCS = Number(arg('docs', 20_000))
const SIZE = Number(arg('size', DOCS))
const LEVELS = arg('levels', '1,5,50').split(',').map(Number)
const TIMEOUT_MS = Number(arg('timeout-ms', 10_000))
const LOAD_BATCH = 500

const post = (server, query, timeoutMs) =>
  rawRequest(server.port, {
    headers: {
      authorization: `Bearer ${server.rootKey}`,
      'content-type': 'application/json',
      'x-query-timeout': String(timeoutMs),
    },
    body: JSON.stringify(q.wrap(query)),
    timeoutMs: timeoutMs + 15_000,
  }).catch(e => ({ status: null, body: e.message }))

async function load(server) {
  const r = await post(server, q.CreateCollection({ name: 'rows' }), 60_000)
  if (r.status !== 201 && r.status !== 200) throw new Error(`create collection: ${r.status} ${r.body}`)
  const pad = 'x'.repeat(100)
  for (let i = 0; i < DOCS; i += LOAD_BATCH) {
    const n = Math.min(LOAD_BATCH, DOCS - i)
    const creates = Array.from({ length: n }, (_, j) => q.Create(q.Collection('rows'), { data: { i: i + j, pad } }))
    const w = await post(server, q.Do(...creates), 60_000)
    if (w.status !== 200 && w.status !== 201) throw new Error(`load: ${w.status} ${w.body.slice(0, 300)}`)
  }
}

const longRead = () =>
  q.Map(q.Paginate(q.Documents(q.Collection('rows')), { size: SIZE }), q.Lambda('r', q.Get(q.Var('r'))))

/** How a query ended: completed, timed out while running, refused before it ran, other. */
function outcome(r) {
  if (r.status === 200) return 'completed'
  if (r.status === 503 && /waiting for an evaluation slot/.test(r.body)) return 'refused'
  if (/"time out"/.test(r.body)) return 'timedOut'
  if (r.status === 503 && /overloaded/.test(r.body)) return 'overloaded'
  return `other ${r.status}`
}

async function level(server, n) {
  const t0 = Date.now()
  const done = []
  const rs = await Promise.all(
    Array.from({ length: n }, async () => {
      const r = await post(server, longRead(), TIMEOUT_MS)
      if (r.status === 200) done.push(Date.now() - t0)
      return outcome(r)
    })
  )
  const ms = Date.now() - t0
  const count = k => rs.filter(x => x === k).length
  const others = rs.filter(x => x.startsWith('other'))
  done.sort((a, b) => a - b)
  return {
    concurrent: n,
    completed: count('completed'),
    timedOut: count('timedOut'),
    refused: count('refused'),
    overloaded: count('overloaded'),
    other: others.length ? others.join(',') : 0,
    firstDoneMs: done.length ? done[0] : null,
    wallMs: ms,
  }
}

async function main() {
  const server = new TallyServer({ bin: BIN })
  await server.start()
  try {
    let t0 = Date.now()
    await load(server)
    console.log(`loaded ${DOCS} documents in ${Date.now() - t0} ms`)
    t0 = Date.now()
    const one = await post(server, longRead(), 60_000)
    console.log(`one query alone (warm-up): ${outcome(one)} in ${Date.now() - t0} ms`)
    const rows = []
    for (const n of LEVELS) {
      rows.push(await level(server, n))
      console.log(JSON.stringify(rows[rows.length - 1]))
    }
    console.log(`\nX-Query-Timeout ${TIMEOUT_MS} ms, ${DOCS} documents, page size ${SIZE}`)
    console.log(
      '| concurrent | completed | timed out | refused before start | overloaded (503) | other | first done ms | wall ms |'
    )
    console.log('|---|---|---|---|---|---|---|---|')
    for (const r of rows) {
      console.log(
        `| ${r.concurrent} | ${r.completed} | ${r.timedOut} | ${r.refused} | ${r.overloaded} | ${r.other} | ${r.firstDoneMs ?? '-'} | ${r.wallMs} |`
      )
    }
  } finally {
    await server.stop()
  }
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
