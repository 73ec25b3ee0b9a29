'use strict'
// Issue 19: GET /metrics (OpenMetrics text) and GET /health, scraped over HTTP while the
// official driver runs queries. The exposition is parsed by a strict parser below (every
// line must be a comment of a known kind or a well-formed sample), and the test asserts
// that the counters move by what the queries did.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startServer, freePort, rawRequest, q, expectFaunaError } = require('./helpers/server')

/** Parse OpenMetrics/Prometheus text: { families: {name: type}, samples: [{name, labels, value}] }. */
function parseExposition(text) {
  const families = {}
  const samples = []
  const lines = text.split('\n')
  assert.equal(lines[lines.length - 1], '', 'exposition ends with a newline')
  assert.equal(lines[lines.length - 2], '# EOF', 'OpenMetrics exposition ends with # EOF')
  for (const line of lines.slice(0, -2)) {
    let m
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|unknown|info|stateset|gaugehistogram)$/.exec(line))) {
      families[m[1]] = m[2]
      continue
    }
    if (/^# (HELP|UNIT) [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( \S+)?$/.exec(line)
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`)
    const labels = {}
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy
      let lm
      let end = 0
      while ((lm = re.exec(m[3]))) {
        labels[lm[1]] = lm[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\')
        end = re.lastIndex
      }
      assert.equal(end, m[3].length, `bad labels in ${line}`)
    }
    const value = Number(m[4])
    assert.ok(!Number.isNaN(value) || m[4] === 'NaN', `bad value in ${line}`)
    samples.push({ name: m[1], labels, value })
  }
  return { families, samples }
}

/** Sum of the samples named `name` whose labels include `match`. */
function sum(parsed, name, match = {}) {
  return parsed.samples
    .filter(s => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0)
}

async function get(port, path, secret) {
  const headers = secret ? { authorization: `Bearer ${secret}` } : {}
  const r = await rawRequest(port, { method: 'GET', path, headers })
  return { status: r.status, headers: r.headers, body: r.body.toString('utf8') }
}

describe('metrics and health', { timeout: 120_000 }, () => {
  let server
  let metricsPort
  before(async () => {
    metricsPort = await freePort()
    server = await startServer({
      extraArgs: ['--metrics-listen', `127.0.0.1:${metricsPort}`, '--metrics-tenants-max', '2'],
    })
  })
  after(async () => {
    if (server) await server.stop()
  })

  const scrape = async () => {
    const r = await get(metricsPort, '/metrics')
    assert.equal(r.status, 200, r.body)
    assert.match(String(r.headers['content-type']), /openmetrics-text/)
    return parseExposition(r.body)
  }

  it('on the client port needs the root key; on --metrics-listen none', async () => {
    assert.equal((await get(server.port, '/metrics')).status, 401)
    const admin = server.adminClient()
    await admin.query(q.CreateDatabase({ name: 'm_child' }))
    const child = await admin.query(q.CreateKey({ database: q.Database('m_child'), role: 'admin' }))
    assert.equal((await get(server.port, '/metrics', child.secret)).status, 403)
    assert.equal((await get(server.port, '/health', child.secret)).status, 403)
    const viaRoot = await get(server.port, '/metrics', server.rootKey)
    assert.equal(viaRoot.status, 200)
    parseExposition(viaRoot.body)
    assert.equal((await get(metricsPort, '/health')).status, 200)
    // The metrics port serves nothing else: no queries without a key.
    assert.equal((await rawRequest(metricsPort, { method: 'POST', path: '/', body: '{}' })).status, 404)
  })

  it('counters move with driver queries', async () => {
    const admin = server.adminClient()
    await admin.query(q.CreateCollection({ name: 'mc' }))
    const before = await scrape()
    for (const f of ['tally_http_requests', 'tally_query_duration_seconds', 'tally_batch_inputs',
      'tally_log_append_seconds', 'tally_tenant_queries', 'tally_storage_bytes', 'tally_queue_inputs']) {
      assert.ok(before.families[f], `family ${f} is exposed`)
    }
    const writes = 7
    const reads = 5
    for (let i = 0; i < writes; i++) await admin.query(q.Create(q.Collection('mc'), { data: { i } }))
    for (let i = 0; i < reads; i++) await admin.query(q.Count(q.Documents(q.Collection('mc'))))
    await expectFaunaError(admin.query(q.Get(q.Ref(q.Collection('mc'), '1'))), 'NotFound', 'instance not found')
    await expectFaunaError(admin.query(q.Abort('stop')), 'BadRequest', 'transaction aborted')
    const after = await scrape()
    const d = (name, match) => sum(after, name, match) - sum(before, name, match)
    assert.ok(d('tally_http_requests_total', { route: '/', status: '200' }) >= writes + reads)
    assert.ok(d('tally_http_requests_total', { route: '/', status: '404' }) >= 1)
    assert.equal(d('tally_query_errors_total', { code: 'instance not found' }), 1)
    assert.equal(d('tally_query_errors_total', { code: 'transaction aborted' }), 1)
    // The failed Get and the Abort end in the read-only pass: reads.
    assert.equal(d('tally_query_duration_seconds_count', { kind: 'write' }), writes)
    assert.equal(d('tally_query_duration_seconds_count', { kind: 'read' }), reads + 2)
    assert.ok(d('tally_batch_inputs_sum') >= writes, 'batch inputs counted')
    assert.ok(d('tally_batch_apply_seconds_count') >= 1)
    assert.ok(d('tally_log_append_seconds_count') >= 1)
    // The root database is tenant 0.
    assert.equal(d('tally_tenant_queries_total', { db: '0', kind: 'write' }), writes)
    assert.ok(d('tally_tenant_bytes_total', { db: '0', direction: 'in' }) > 0)
    assert.ok(d('tally_tenant_bytes_total', { db: '0', direction: 'out' }) > 0)
    assert.ok(sum(after, 'tally_storage_bytes', { file: 'input_log' }) > 0)
    assert.ok(sum(after, 'tally_applied_height') >= writes)
  })

  it('tenant labels are capped; later tenants count as "other"', async () => {
    const admin = server.adminClient()
    const clients = []
    for (const name of ['t1', 't2', 't3', 't4']) {
      await admin.query(q.CreateDatabase({ name }))
      const k = await admin.query(q.CreateKey({ database: q.Database(name), role: 'server' }))
      clients.push(server.client(k.secret))
    }
    for (const c of clients) await c.query(q.Add(1, 1))
    const m = await scrape()
    const dbs = new Set(m.samples.filter(s => s.name === 'tally_tenant_queries_total').map(s => s.labels.db))
    // --metrics-tenants-max 2: the root and one child got labels, the rest are "other".
    assert.ok(dbs.has('other'), [...dbs].join(','))
    assert.equal(dbs.size, 3, [...dbs].join(','))
    assert.ok(sum(m, 'tally_tenant_queries_total', { db: 'other' }) >= 3)
  })

  it('/health says the node can read and write', async () => {
    const r = await get(server.port, '/health', server.rootKey)
    assert.equal(r.status, 200)
    const h = JSON.parse(r.body)
    assert.equal(h.reads, true)
    assert.equal(h.writes, true)
    assert.equal(h.role, 'single')
    assert.ok(h.height >= 1)
  })
})
