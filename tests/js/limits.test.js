'use strict'
// Hostile and oversized requests, sent as plain HTTP: the server must answer each
// with a clean FQL error (or a 4xx) promptly, and stay up through all of them.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const { startServer, q, ping, rawRequest, sleep, HOST } = require('./helpers/server')

let server

/** Parse an error response body and check its FQL error shape. */
function assertErrorBody(res, what) {
  let body
  try {
    body = JSON.parse(res.body)
  } catch (e) {
    assert.fail(`${what}: error body is not JSON: ${JSON.stringify(res.body.slice(0, 300))}`)
  }
  assert.ok(
    Array.isArray(body.errors) && body.errors.length > 0,
    `${what}: expected {"errors":[...]}, got ${res.body.slice(0, 300)}`
  )
  for (const e of body.errors) {
    assert.equal(typeof e.code, 'string', `${what}: error code`)
    assert.equal(typeof e.description, 'string', `${what}: error description`)
  }
  return body.errors
}

async function assertHealthy() {
  assert.ok(server.alive, `server process exited: ${JSON.stringify(server.exitInfo)}\n${server.logTail()}`)
  assert.equal(await ping(server.port, 5_000), 200, '/ping answers 200')
  const res = await server.raw(JSON.stringify({ add: [1, 2] }), { timeoutMs: 10_000 })
  assert.equal(res.status, 200, res.body)
  assert.equal(JSON.parse(res.body).resource, 3)
}

/**
 * POST a body of `size` bytes (a JSON string literal) streamed in 1 MiB chunks.
 * Resolves {status, body} as soon as the server answers, or {status: null, error}
 * if the connection is reset before any response arrives; rejects after `timeoutMs`.
 */
function postHuge(port, secret, size, timeoutMs) {
  return new Promise((resolve, reject) => {
    let status = null
    let settled = false
    const chunks = []
    const finish = (fn, v) => {
      if (!settled) {
        settled = true
        clearTimeout(timer)
        req.destroy()
        fn(v)
      }
    }
    const req = http.request({
      host: HOST,
      port,
      method: 'POST',
      path: '/',
      agent: false,
      headers: {
        authorization: `Bearer ${secret}`,
        'content-type': 'application/json',
        'content-length': String(size),
      },
    })
    const timer = setTimeout(
      () => finish(reject, new Error(`no response to a ${size}-byte body within ${timeoutMs} ms`)),
      timeoutMs
    )
    req.on('response', res => {
      status = res.statusCode
      res.on('data', c => chunks.push(c))
      res.on('end', () => finish(resolve, { status, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', () => finish(resolve, { status, body: Buffer.concat(chunks).toString('utf8') }))
    })
    req.on('error', e => {
      if (status !== null) finish(resolve, { status, body: Buffer.concat(chunks).toString('utf8') })
      else finish(resolve, { status: null, error: e.code || e.message })
    })
    const piece = Buffer.alloc(1 << 20, 'a')
    let written = 0
    const pump = () => {
      while (!settled && status === null && written < size) {
        let n = Math.min(piece.length, size - written)
        let buf = piece.subarray(0, n)
        if (written === 0) buf = Buffer.concat([Buffer.from('"'), piece.subarray(0, n - 1)])
        if (written + n === size) buf = Buffer.concat([buf.subarray(0, n - 1), Buffer.from('"')])
        written += n
        if (!req.write(buf)) {
          req.once('drain', pump)
          return
        }
      }
      if (written >= size && !settled) req.end()
    }
    pump()
  })
}

/** Build an N-deep nested structure as JSON text without recursion. */
const deepArray = n => '['.repeat(n) + '1' + ']'.repeat(n)
const deepNot = n => '{"not":'.repeat(n) + 'true' + '}'.repeat(n)
const deepObject = n => '{"object":{"a":'.repeat(n) + '1' + '}}'.repeat(n)

describe('limits', { timeout: 300_000 }, () => {
  before(async () => {
    server = await startServer()
    const c = server.adminClient()
    await c.query(q.CreateCollection({ name: 'limits' }))
    await c.query(q.Create(q.Collection('limits'), { data: { x: 1 } }))
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('malformed JSON -> 400 with {"errors":[...]}', async () => {
    const bodies = [
      '{"add": [1,',
      'this is not json',
      '{"add": [1, 2]} trailing',
      '',
      '{"a": 1, "a": }',
      Buffer.from([0x22, 0xff, 0xfe, 0x22]), // a JSON string with invalid UTF-8
    ]
    for (const body of bodies) {
      const res = await server.raw(body, { timeoutMs: 10_000 })
      assert.equal(res.status, 400, `body ${JSON.stringify(String(body))} -> ${res.status} ${res.body}`)
      const errs = assertErrorBody(res, `malformed body ${JSON.stringify(String(body))}`)
      // FQL v4 reports unparsable bodies as "invalid expression" at the root.
      assert.equal(errs[0].code, 'invalid expression', res.body)
    }
    await assertHealthy()
  })

  it('missing or malformed Authorization -> 401 with errors', async () => {
    const res = await server.raw('{"add":[1,1]}', { secret: null, timeoutMs: 10_000 })
    assert.equal(res.status, 401, res.body)
    const errs = assertErrorBody(res, 'no auth')
    assert.equal(errs[0].code, 'unauthorized')
    const res2 = await server.raw('{"add":[1,1]}', {
      secret: null,
      headers: { authorization: 'Basic !!!not-base64!!!' },
      timeoutMs: 10_000,
    })
    assert.equal(res2.status, 401, res2.body)
    assertErrorBody(res2, 'garbage basic auth')
    // HTTP Basic with the secret as the user name is accepted.
    const basic = Buffer.from(`${server.rootKey}:`).toString('base64')
    const ok = await server.raw('{"add":[1,1]}', {
      secret: null,
      headers: { authorization: `Basic ${basic}` },
      timeoutMs: 10_000,
    })
    assert.equal(ok.status, 200, ok.body)
    assert.equal(JSON.parse(ok.body).resource, 2)
  })

  it('10,000-deep nested array -> 400 clean error, server stays up', async () => {
    const res = await server.raw(deepArray(10_000), { timeoutMs: 30_000 })
    assert.equal(res.status, 400, `${res.status} ${res.body.slice(0, 300)}`)
    const errs = assertErrorBody(res, 'deep array')
    assert.equal(errs[0].code, 'invalid expression', res.body.slice(0, 300))
    await assertHealthy()

    // Deep object literals and deep expressions may be evaluated or refused, but cleanly.
    const res2 = await server.raw(deepObject(10_000), { timeoutMs: 30_000 })
    if (res2.status === 200) {
      let r = JSON.parse(res2.body).resource
      for (let i = 0; i < 10_000; i++) r = r.a
      assert.equal(r, 1)
    } else {
      assert.equal(res2.status, 400, `${res2.status} ${res2.body.slice(0, 300)}`)
      assertErrorBody(res2, 'deep object')
    }
    await assertHealthy()

    const res3 = await server.raw(deepNot(10_000), { timeoutMs: 30_000 })
    if (res3.status === 200) {
      assert.equal(JSON.parse(res3.body).resource, true)
    } else {
      assert.equal(res3.status, 400, `${res3.status} ${res3.body.slice(0, 300)}`)
      assertErrorBody(res3, 'deep expression')
    }
    await assertHealthy()

    // Reasonable nesting still works.
    const ok = await server.raw(deepArray(60), { timeoutMs: 10_000 })
    assert.equal(ok.status, 200, ok.body.slice(0, 300))
    assert.equal(JSON.parse(ok.body).resource.flat(Infinity)[0], 1)
  })

  it('nesting that FQL v4 accepts (500 levels) still evaluates', async t => {
    // v4 parses request bodies with Jackson's default limit of 1,000 nesting
    // levels, so generated queries and deeply nested documents well inside that
    // (here 500 JSON levels) must work, not only trivially shallow ones.
    const cases = [
      ['500 nested Not', deepNot(500), r => assert.equal(r, true)],
      ['500 nested arrays', deepArray(500), r => assert.equal(r.flat(Infinity)[0], 1)],
      [
        '250 nested object literals (500 JSON levels)',
        deepObject(250),
        r => {
          for (let i = 0; i < 250; i++) r = r.a
          assert.equal(r, 1)
        },
      ],
    ]
    const failures = []
    for (const [name, body, check] of cases) {
      const res = await server.raw(body, { timeoutMs: 30_000 })
      t.diagnostic(`${name} -> ${res.status} ${res.status === 200 ? '' : res.body.slice(0, 160)}`)
      try {
        assert.equal(res.status, 200, res.body.slice(0, 300))
        check(JSON.parse(res.body).resource)
      } catch (e) {
        failures.push(`${name}: ${e.message}`)
      }
    }
    await assertHealthy()
    assert.deepEqual(failures, [], failures.join('\n'))
  })

  it('a 20 MB body -> 4xx promptly, server still answers', async t => {
    // HTTP/1.1, body streamed: the server may answer early and close. Whether the
    // client reads that answer or sees the reset first is a race on the wire
    // (unless the server lingers or rejects on Content-Length before reading), so
    // a reset is tolerated here; a response, when read, must be a clean FQL 4xx.
    const res = await postHuge(server.port, server.rootKey, 20 * 1024 * 1024, 60_000)
    if (res.status === null) {
      t.diagnostic(`20 MB body (HTTP/1.1) -> connection reset before the response was read (${res.error})`)
    } else {
      t.diagnostic(`20 MB body (HTTP/1.1) -> ${res.status} ${res.body.slice(0, 200)}`)
      assert.ok(res.status >= 400 && res.status < 500, `expected 4xx, got ${res.status} ${res.body.slice(0, 300)}`)
      // Drivers parse every error body as JSON: it must be an FQL error, as v4's
      // 413 {"errors":[{"code":"request too large",...}]} is.
      const errs = assertErrorBody(res, '20 MB body')
      assert.equal(errs[0].code, 'request too large', res.body.slice(0, 300))
    }
    await assertHealthy()

    // The same through the driver (HTTP/2): a driver error carrying the server's
    // response, not a JSON parse failure inside the driver.
    const c = server.adminClient()
    let err = null
    try {
      await c.query('a'.repeat(20 * 1024 * 1024))
    } catch (e) {
      err = e
    }
    assert.ok(err, 'a 20 MB query must fail')
    assert.ok(
      err.requestResult && err.requestResult.statusCode === 413,
      `expected a 413 driver error, got ${err.name}: ${err.message}`
    )
    assert.ok(Array.isArray(err.requestResult.responseContent.errors))
    assert.equal(err.requestResult.responseContent.errors[0].code, 'request too large')
    await assertHealthy()
  })

  it('huge Paginate size -> bounded answer or clear error, promptly', async () => {
    // FQL v4 (Fauna's own core) clamps page sizes to 100,000; an explicit
    // "invalid argument" error is also acceptable. Either way the server must not
    // try to honour a billion-element page, and must answer promptly.
    const c = server.adminClient()
    for (const size of [1_000_000_000, 2 ** 62, 100_001, -1]) {
      const t0 = Date.now()
      let page = null
      let err = null
      try {
        page = await c.query(q.Paginate(q.Documents(q.Collection('limits')), { size }))
      } catch (e) {
        err = e
      }
      const elapsed = Date.now() - t0
      assert.ok(elapsed < 5_000, `Paginate size ${size} took ${elapsed} ms`)
      if (err) {
        assert.equal(err.name, 'BadRequest', `size ${size}: ${err.name} ${err.message}`)
        assert.equal(
          err.errors()[0].code,
          'invalid argument',
          `size ${size}: ${JSON.stringify(err.errors())}`
        )
      } else {
        assert.ok(Array.isArray(page.data), `size ${size}: ${JSON.stringify(page)}`)
        assert.equal(page.data.length, size > 0 ? 1 : 0, `size ${size}`)
      }
    }
    // The maximum itself is allowed.
    const page = await c.query(q.Paginate(q.Documents(q.Collection('limits')), { size: 100_000 }))
    assert.equal(page.data.length, 1)
    await assertHealthy()
  })

  it('X-Query-Timeout: 100 stops a long-running query', async t => {
    // Few evaluation steps, lots of work: 20,000 x Length(Repeat("abcdefgh", 100000)).
    const arr = Array.from({ length: 20_000 }, (_, i) => i)
    const slow = {
      count: {
        map: { lambda: 'x', expr: { length: { repeat: 'abcdefgh', number: 100_000 } } },
        collection: arr,
      },
    }
    const body = JSON.stringify(slow)

    // Control: with a generous timeout the query is valid and takes a while.
    const t0 = Date.now()
    const control = await server.raw(body, {
      headers: { 'x-query-timeout': '60000' },
      timeoutMs: 120_000,
    })
    const controlMs = Date.now() - t0
    t.diagnostic(`control (X-Query-Timeout: 60000) -> ${control.status} after ${controlMs} ms`)
    assert.equal(control.status, 200, control.body.slice(0, 300))
    assert.equal(JSON.parse(control.body).resource, 20_000)
    assert.ok(controlMs > 300, `control took only ${controlMs} ms: too light to test a 100 ms timeout`)

    const t1 = Date.now()
    const res = await server.raw(body, { headers: { 'x-query-timeout': '100' }, timeoutMs: 60_000 })
    const elapsed = Date.now() - t1
    t.diagnostic(`X-Query-Timeout: 100 -> ${res.status} after ${elapsed} ms: ${res.body.slice(0, 200)}`)
    assert.ok(res.status >= 400, `expected an error, got ${res.status} ${res.body.slice(0, 200)} after ${elapsed} ms`)
    const errs = assertErrorBody(res, 'query timeout')
    assert.equal(errs[0].code, 'time out', res.body.slice(0, 300))
    assert.ok(elapsed < Math.max(1_000, controlMs / 2), `timeout took ${elapsed} ms to fire (control ${controlMs} ms)`)

    // The same through the driver's queryTimeout option (HTTP/2, X-Query-Timeout header).
    const c = server.client(server.rootKey, { queryTimeout: 100 })
    const t2 = Date.now()
    await assert.rejects(c.query(new (require('faunadb').Expr)(slow)), e => {
      assert.ok(e.requestResult, `expected a server error, got ${e.name}: ${e.message}`)
      assert.equal(e.requestResult.responseContent.errors[0].code, 'time out')
      return true
    })
    assert.ok(Date.now() - t2 < Math.max(1_000, controlMs / 2), 'driver queryTimeout honoured')

    // The server is not left busy.
    const t3 = Date.now()
    await assertHealthy()
    assert.ok(Date.now() - t3 < 5_000, 'server answers promptly after timeouts')
  })

  it('a runaway query (8,000,000 evaluations) ends in an error, not a hang', async t => {
    const arr = Array.from({ length: 200 }, (_, i) => i)
    // Count(Map(arr, x => Count(Map(arr, y => Count(Map(arr, z => Add(x, y, z)))))))
    const nest = (v, inner) => ({ count: { map: { lambda: v, expr: inner }, collection: arr } })
    const heavy = nest('x', nest('y', nest('z', { add: [{ var: 'x' }, { var: 'y' }, { var: 'z' }] })))
    const t0 = Date.now()
    const res = await server.raw(JSON.stringify(heavy), {
      headers: { 'x-query-timeout': '2000' },
      timeoutMs: 60_000,
    })
    const elapsed = Date.now() - t0
    t.diagnostic(`runaway query -> ${res.status} after ${elapsed} ms: ${res.body.slice(0, 200)}`)
    if (res.status === 200) {
      assert.equal(JSON.parse(res.body).resource, 200, 'if it completes, it is correct')
    } else {
      assert.ok(res.status >= 400)
      assertErrorBody(res, 'runaway query')
    }
    assert.ok(elapsed < 10_000, `runaway query took ${elapsed} ms`)
    await assertHealthy()
  })

  it('a burst of bad requests does not take the server down', async () => {
    const jobs = []
    for (let i = 0; i < 50; i++) {
      const body = i % 3 === 0 ? '{"nope":' : i % 3 === 1 ? deepArray(5_000) : '{"add":[1,"x"]}'
      jobs.push(server.raw(body, { timeoutMs: 30_000 }))
    }
    const results = await Promise.all(jobs)
    for (const r of results) assert.equal(r.status, 400, r.body.slice(0, 200))
    await assertHealthy()
  })

  it('the server process stayed up through everything', async () => {
    await sleep(100)
    await assertHealthy()
    const res = await rawRequest(server.port, { method: 'GET', path: '/ping', timeoutMs: 5_000 })
    assert.equal(res.status, 200)
  })
})
