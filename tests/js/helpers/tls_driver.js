'use strict'
// Runs a few queries and a document stream through the official faunadb driver with
// scheme 'https' and prints one JSON line with what it saw. Run as a child process: the driver opens its HTTP/2
// sessions with `http2.connect(origin)`, which trusts only Node's built-in roots plus
// NODE_EXTRA_CA_CERTS, read once at process start (so the test CA is given there).
//
// Usage: node tls_driver.js PORT SECRET COLLECTION

const faunadb = require('faunadb')
const q = faunadb.query

const [port, secret, name] = process.argv.slice(2)

async function main() {
  const c = new faunadb.Client({
    secret, domain: '127.0.0.1', port: Number(port), scheme: 'https', timeout: 30, checkNewVersion: false,
  })
  try {
    await c.query(q.CreateCollection({ name }))
    const doc = await c.query(q.Create(q.Collection(name), { data: { n: 42 } }))
    const got = await c.query(q.Get(doc.ref))
    const page = await c.query(q.Paginate(q.Documents(q.Collection(name))))
    const streamed = await streamUpdates(c, doc.ref)
    return { ok: true, n: got.data.n, ids: page.data.map(r => r.id), id: doc.ref.id, streamed }
  } catch (e) {
    return { ok: false, name: e.name, message: String(e.message), code: e.code }
  } finally {
    await Promise.resolve(c.close({ force: true })).catch(() => {})
  }
}

/** A document stream (the driver's HTTP/2 POST /stream) sees two updates: their `n`s. */
function streamUpdates(c, ref) {
  return new Promise((resolve, reject) => {
    const seen = []
    const sub = c.stream(ref)
    const timer = setTimeout(() => {
      sub.close()
      reject(new Error(`stream timed out; saw ${JSON.stringify(seen)}`))
    }, 20_000)
    sub.on('start', async () => {
      try {
        await c.query(q.Update(ref, { data: { n: 43 } }))
        await c.query(q.Update(ref, { data: { n: 44 } }))
      } catch (e) {
        reject(e)
      }
    })
    sub.on('version', v => {
      seen.push(v.document.data.n)
      if (seen.length === 2) {
        clearTimeout(timer)
        sub.close()
        resolve(seen)
      }
    })
    sub.on('error', e => {
      clearTimeout(timer)
      reject(e)
    })
    sub.start()
  })
}

main().then(r => {
  process.stdout.write(JSON.stringify(r) + '\n')
})
