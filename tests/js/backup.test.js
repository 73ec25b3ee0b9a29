'use strict'
// Issue 19: an online backup taken while the node takes writes, restored into a new data
// directory; a server started on it has the backup's head and, document for document,
// the state the original had at that head's timestamp; it then takes writes.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startServer, q } = require('./helpers/server')
const { tallyCli, head, allDocs } = require('./helpers/backup')

function tally(server, args) {
  return tallyCli(server.bin, server.rootKey, server.url, args)
}

describe('online backup and restore', { timeout: 180_000 }, () => {
  let server
  let restored
  let tmp
  before(async () => {
    server = await startServer()
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-backup-'))
  })
  after(async () => {
    if (server) await server.stop()
    if (restored) await restored.stop()
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
  })

  it('a backup under write load restores to the same head and documents', async () => {
    const admin = server.adminClient()
    await admin.query(q.CreateCollection({ name: 'acct' }))
    await admin.query(q.Map(Array.from({ length: 200 }, (_, i) => i), q.Lambda('i', q.Create(q.Collection('acct'), { data: { i: q.Var('i'), balance: 100 } }))))
    // Writers keep going while the backup is taken.
    let stop = false
    let written = 0
    const writers = Array.from({ length: 4 }, async (_, w) => {
      const c = server.client()
      while (!stop) {
        await c.query(q.Create(q.Collection('acct'), { data: { writer: w, n: written++ } }))
      }
    })
    await new Promise(r => setTimeout(r, 300))
    const file = path.join(tmp, 'node.backup')
    const r = tally(server, ['backup', '--out', file])
    await new Promise(r => setTimeout(r, 200))
    stop = true
    await Promise.all(writers)
    assert.equal(r.status, 0, r.stdout + r.stderr)
    const m = /backup of height (\d+) \(head ([0-9a-f]{64})\)/.exec(r.stdout)
    assert.ok(m, r.stdout)
    const height = Number(m[1])
    const now = await head(server)
    assert.ok(now.height > height, `writes went on after the backup (${now.height} > ${height})`)

    // A damaged file is refused.
    const bytes = fs.readFileSync(file)
    const bad = Buffer.from(bytes)
    bad[bad.length >> 1] ^= 1
    fs.writeFileSync(path.join(tmp, 'bad.backup'), bad)
    const refused = tally(server, ['restore', path.join(tmp, 'bad.backup'), '--data-dir', path.join(tmp, 'bad')])
    assert.notEqual(refused.status, 0)
    assert.match(refused.stderr, /SHA-256/)

    const dir = path.join(tmp, 'restored')
    const rr = tally(server, ['restore', file, '--data-dir', dir])
    assert.equal(rr.status, 0, rr.stdout + rr.stderr)
    restored = await startServer({ dataDir: dir, rootKey: server.rootKey })
    const h = await head(restored)
    assert.equal(h.height, height)
    assert.equal(h.hash, m[2])
    const at = h.header.last_ts
    const mine = await allDocs(restored.adminClient())
    const theirs = await allDocs(server.adminClient(), at)
    assert.ok(mine.length >= 200)
    assert.deepEqual(mine, theirs)
    // The restored node goes on from that head.
    await restored.adminClient().query(q.Create(q.Collection('acct'), { data: { after: true } }))
    const next = await head(restored)
    assert.equal(next.height, height + 1)
    assert.equal(next.header.prev_hash, m[2])
  })
})
