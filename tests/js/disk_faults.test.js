'use strict'
// Disk faults under a real node (issue 11, item 6): a torn input-log tail, a damaged
// acknowledged log frame, a damaged state store (redb file), and a full disk (a small
// tmpfs; needs root and mount, skipped with a message otherwise — CI runs as root).
// Required: the node stops taking writes with a clear error or refuses to open with one
// that says what to do; it never acknowledges a write it did not make durable; once the
// fault is cleared it recovers with every acknowledged write.

const { describe, it, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { TallyServer, q, rawRequest } = require('./helpers/server')

const servers = []
/** The input log's one segment at this size (docs/record.md, "Input log segments"). */
const FIRST_SEGMENT = '00000000000000000001.seg'
const mounts = []

after(async () => {
  for (const s of servers) await s.stop().catch(() => {})
  for (const m of mounts) {
    try {
      execFileSync('umount', [m])
      fs.rmSync(m, { recursive: true, force: true })
    } catch (_) {}
  }
})

async function start(opts = {}) {
  const s = new TallyServer(opts)
  servers.push(s)
  await s.start()
  return s
}

/**
 * A driver query that also ends when the node exits. The faunadb driver's HTTP/2 request
 * never settles when its server dies under it (no error, no timeout: the promise stays
 * pending), so a fail-stop during a write would otherwise hang the test.
 */
function queryOrExit(s, c, expr) {
  return Promise.race([
    c.query(expr),
    s.exited.then(() => {
      throw new Error(`the node exited (${JSON.stringify(s.exitInfo)}) before answering`)
    }),
  ])
}

/** Where the frames of an input log segment end: the header is 32 bytes, each frame `len u32 | crc32 | body`,
 * and zeros written ahead follow the last one (docs/record.md, "Input log segments"). */
function framesEnd(bytes) {
  let pos = 32
  while (pos + 8 <= bytes.length && !bytes.subarray(pos, pos + 8).equals(Buffer.alloc(8))) pos += 8 + bytes.readUInt32BE(pos)
  return pos
}

async function kill9(s) {
  s.proc.kill('SIGKILL')
  await s.exited
}

async function head(s) {
  return JSON.parse((await rawRequest(s.port, { method: 'GET', path: '/ledger/head' })).body)
}

async function countDocs(s) {
  return s.adminClient().query(q.Count(q.Documents(q.Collection('c'))))
}

/** A node with collection `c` and `n` documents written one transaction each. */
async function nodeWithDocs(n, opts = {}) {
  const s = await start(opts)
  const c = s.adminClient()
  await c.query(q.CreateCollection({ name: 'c' }))
  for (let i = 0; i < n; i++) await c.query(q.Create(q.Collection('c'), { data: { i } }))
  return s
}

/** Starting must fail; resolves the server's output. */
async function expectRefusal(dataDir, rootKey) {
  const s = new TallyServer({ dataDir, rootKey })
  servers.push(s)
  await assert.rejects(s.start(), /exited before becoming ready/)
  assert.notEqual(s.exitInfo.code, 0, 'a refusal exits non-zero')
  return s.output
}

describe('disk faults', { timeout: 600_000 }, () => {
  it('a torn input-log tail after kill -9: every acknowledged write is there', async () => {
    const s = await nodeWithDocs(20)
    const before = await head(s)
    await kill9(s)
    // A crash mid-append: a frame header promising more bytes than follow, written where the
    // next append goes (over the zeros the log keeps ahead of its frames).
    const seg = path.join(s.dataDir, 'log', FIRST_SEGMENT)
    const fd = fs.openSync(seg, 'r+')
    fs.writeSync(fd, Buffer.from([0, 0, 1, 0, 9, 9, 9, 9, 1, 2, 3]), 0, 11, framesEnd(fs.readFileSync(seg)))
    fs.closeSync(fd)
    const s2 = await start({ dataDir: s.dataDir, rootKey: s.rootKey })
    assert.equal(await countDocs(s2), 20)
    assert.deepEqual(await head(s2), before)
    await s2.adminClient().query(q.Create(q.Collection('c'), { data: { after: true } }))
    assert.equal(await countDocs(s2), 21)
  })

  it('a damaged acknowledged log frame: the node refuses to open and says what to do', async () => {
    const s = await nodeWithDocs(10)
    await kill9(s)
    const log = path.join(s.dataDir, 'log', FIRST_SEGMENT)
    const bytes = fs.readFileSync(log)
    bytes[32 + 20] ^= 0x40 // inside the first batch (after the 32-byte segment header), which later batches follow
    fs.writeFileSync(log, bytes)
    const out = await expectRefusal(s.dataDir, s.rootKey)
    assert.match(out, /input log/)
    assert.match(out, /restore the data directory/)
    assert.deepEqual(fs.readFileSync(log), bytes, 'the log is not truncated')
  })

  for (const [damage, hurt] of [
    ['truncated to half', f => fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2))],
    ['with its header zeroed', f => {
      const fd = fs.openSync(f, 'r+')
      fs.writeSync(fd, Buffer.alloc(512), 0, 512, 0)
      fs.closeSync(fd)
    }],
    ['with pages overwritten', f => {
      const fd = fs.openSync(f, 'r+')
      const junk = Buffer.alloc(4096, 0xab)
      // Every other 4 KiB page after the first two: a small store (one flush at shutdown
      // writes only a few dozen pages) is hit as surely as a large one.
      for (let off = 8192; off < fs.statSync(f).size; off += 8192) fs.writeSync(fd, junk, 0, junk.length, off)
      fs.closeSync(fd)
    }],
  ]) {
    it(`a state store ${damage}: refused with what to do; moved aside, it is rebuilt from the log`, async () => {
      const s = await nodeWithDocs(15)
      const before = await head(s)
      await s.stop({ keepData: true })
      const state = path.join(s.dataDir, 'state.redb')
      hurt(state)
      const out = await expectRefusal(s.dataDir, s.rootKey)
      assert.match(out, /state store .* cannot be opened/)
      assert.match(out, /move it aside/)
      fs.renameSync(state, state + '.damaged')
      const s2 = await start({ dataDir: s.dataDir, rootKey: s.rootKey })
      assert.equal(await countDocs(s2), 15)
      assert.deepEqual(await head(s2), before, 'the rebuilt state has the same head')
      await s2.stop({ keepData: true })
      fs.rmSync(s.dataDir, { recursive: true, force: true })
    })
  }

  it('the state store fails to write: the node stops at once, nothing acknowledged is lost', async t => {
    // Only the state store's file is on a small tmpfs (a symlink): its background write
    // fails while the input log still takes every batch. Before, the node then answered
    // every read and write 500 ("the store is stopped") for as long as no batch reached
    // the executor — with writes failing their read-only pass first, forever.
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-state-full-'))
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt], { stdio: 'pipe' })
    } catch (e) {
      fs.rmSync(mnt, { recursive: true, force: true })
      t.skip(`mounting a tmpfs needs root and mount(8): ${String(e.message).split('\n')[0]}`)
      return
    }
    mounts.push(mnt)
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-js-'))
    fs.symlinkSync(path.join(mnt, 'state.redb'), path.join(dataDir, 'state.redb'))
    const s = await start({ dataDir })
    const c = s.adminClient()
    await c.query(q.CreateCollection({ name: 'c' }))
    const acked = []
    let refusal = null
    const loopUntil = Date.now() + 120_000
    for (let i = 0; i < 2000 && !refusal && s.alive && Date.now() < loopUntil; i++) {
      try {
        await queryOrExit(s, c, q.Create(q.Collection('c'), { data: { i, pad: 'p'.repeat(20_000) } }))
        acked.push(i)
      } catch (e) {
        refusal = e
      }
    }
    assert.ok(acked.length > 10, `writes were acknowledged before (${acked.length})`)
    // No more requests: the node must stop by itself, and say why.
    const stopped = await Promise.race([s.exited.then(() => true), new Promise(r => setTimeout(() => r(false), 60_000).unref())])
    assert.ok(stopped, `the node kept running after its state store failed: ${s.logTail(600)}`)
    assert.equal(s.exitInfo.code, 70, s.logTail())
    assert.match(s.logTail(), /writing the state store failed: .*No space left on device/)
    await s.stop({ keepData: true }) // closes the driver's connection that the exit left pending
    // Space back: the state is replayed from the log with every acknowledged write.
    execFileSync('mount', ['-o', 'remount,size=64m', mnt])
    const s2 = await start({ dataDir, rootKey: s.rootKey })
    const docs = await s2.adminClient().query(
      q.Map(q.Paginate(q.Documents(q.Collection('c')), { size: 10_000 }), q.Lambda('r', q.Select(['data', 'i'], q.Get(q.Var('r')))))
    )
    const have = new Set(docs.data)
    for (const i of acked) assert.ok(have.has(i), `acknowledged write ${i} is present`)
    await s2.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it('a full disk: writes are refused clearly, none acknowledged is lost once space is back', async t => {
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-full-'))
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', mnt], { stdio: 'pipe' })
    } catch (e) {
      fs.rmSync(mnt, { recursive: true, force: true })
      t.skip(`mounting a tmpfs needs root and mount(8): ${String(e.message).split('\n')[0]}`)
      return
    }
    mounts.push(mnt)
    const dataDir = path.join(mnt, 'data')
    const s = await start({ dataDir })
    const c = s.adminClient()
    await c.query(q.CreateCollection({ name: 'c' }))
    const acked = []
    let refusal = null
    for (let i = 0; i < 2000 && !refusal; i++) {
      try {
        await queryOrExit(s, c, q.Create(q.Collection('c'), { data: { i, pad: 'p'.repeat(20_000) } }))
        acked.push(i)
      } catch (e) {
        refusal = e
      }
    }
    assert.ok(refusal, 'the disk filled up')
    assert.ok(acked.length > 10, `writes were acknowledged before (${acked.length})`)
    const rr = refusal.requestResult
    const storeStopped = rr && rr.statusCode === 500 &&
      /store is stopped/.test(JSON.stringify(rr.responseContent))
    if (storeStopped || !rr) {
      // The state store's background write hit the full disk first: the node stops at
      // once (fail-stop, exit 70, saying why), so this write met a closed connection, or
      // — just before the exit — the stopped store in its read-only pass (500, saying
      // why); nothing was logged for it, and the log replays on restart.
      if (rr) assert.match(JSON.stringify(rr.responseContent), /No space left on device/)
      await s.exited
      assert.equal(s.exitInfo.code, 70, s.logTail())
      assert.match(s.logTail(), /writing the state store failed/)
    } else if (s.alive) {
      // The log could not take the batch: refused, rolled back, and no write is taken
      // until a restart; reads go on.
      assert.equal(rr.statusCode, 503, JSON.stringify(rr.responseContent))
      const desc = rr.responseContent.errors[0].description
      assert.match(desc, /No space left on device/)
      assert.match(desc, /not committed/)
      const later = await queryOrExit(s, c, q.Create(q.Collection('c'), { data: { tiny: true } })).catch(e => e)
      const lr = later.requestResult
      const laterDesc = lr && JSON.stringify(lr.responseContent)
      if (!lr) {
        // The state store's background write filled the disk too: the node stopped
        // (fail-stop), so the write met a closed connection.
        await s.exited
        assert.equal(s.exitInfo.code, 70, `${String(later).slice(0, 200)}\n${s.logTail()}`)
      } else if (lr.statusCode === 503) {
        assert.match(lr.responseContent.errors[0].description, /fix the disk/)
        assert.equal(await countDocs(s), acked.length, 'reads still answer, with exactly the acknowledged writes')
      } else {
        // The state store's background write filled the disk too, and stopped the store:
        // this write's read-only pass meets it (500, saying why) just before the node
        // stops (fail-stop).
        assert.equal(lr.statusCode, 500, laterDesc)
        assert.match(laterDesc, /No space left on device|store is stopped/)
      }
    } else {
      // The state store could not be written: the node stopped (fail-stop) and said why.
      assert.equal(s.exitInfo.code, 70, s.logTail())
      assert.match(s.logTail(), /fatal/)
    }
    // Clear the fault and restart on the same data.
    execFileSync('mount', ['-o', 'remount,size=64m', mnt])
    await s.stop({ keepData: true })
    const s2 = await start({ dataDir, rootKey: s.rootKey })
    const docs = await s2.adminClient().query(
      q.Map(q.Paginate(q.Documents(q.Collection('c')), { size: 10_000 }), q.Lambda('r', q.Select(['data', 'i'], q.Get(q.Var('r')))))
    )
    const have = new Set(docs.data)
    for (const i of acked) assert.ok(have.has(i), `acknowledged write ${i} is present`)
    // The refused write was rolled back; at most it may appear if the node died after logging it.
    assert.ok(docs.data.length <= acked.length + 1, `${docs.data.length} documents for ${acked.length} acknowledged`)
    await s2.adminClient().query(q.Create(q.Collection('c'), { data: { i: -1 } }))
  })
})
