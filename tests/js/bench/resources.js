'use strict'
// Resource benchmark (issue 13; not a test, CI does not run it): reruns the attacks of
// the issue with bounded counts against a fresh loopback server each, and prints for
// each the server's peak RSS, the worst /ping latency while it ran, and the work done.
// A guard kills the server if its RSS passes --guard-mib (default 2560), so a build
// without the bounds cannot take the machine down; the row then says so.
//
//   node tests/js/bench/resources.js [--bin path/to/tally] [--guard-mib 2560] [--only name,name] [--issue]
//
// The scenarios named `issue…` run the attacks at the issue's own scale (fifty copies of
// the memory attack, 200 unread answers, five HTTP/2 connections with shut windows,
// 64 writers of 16 MiB, 80,000 concurrent small writes, 25,000 sockets against a server
// limited to 20,000 file descriptors, slowloris heads, stalled 16 MiB uploads, an NGram
// of 1M, listings over 16 MiB documents). `issueConnFlood` opens more sockets than this
// shell's default file-descriptor limit: run the benchmark under `ulimit -n 65536` (the
// server it starts is put back to 20,000 by a wrapper); where the hard limit is lower,
// both counts are scaled down to it (CONN_FLOOD).
//
// Per scenario: peak RSS; every /ping probe's latency (worst, p99, p50, how many over
// 100 ms; probed from a process of its own) with its TCP connect time apart; failed
// probes by reason, and in the JSON line each slow or failed probe's wall clock and
// local port (to find it in a packet capture); the deepest accept queue and the kernel's
// listen drops; the load average; CPU and wait for a core of the server's accept and
// runtime threads.

const fs = require('node:fs')
const http2 = require('node:http2')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { TallyServer, rawRequest, sleep, HOST, q } = require(path.join(__dirname, '..', 'helpers', 'server'))

const MIB = 1024 * 1024
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : dflt
}
const GUARD = Number(arg('guard-mib', 2560)) * MIB
const BIN = arg('bin', undefined)
const ONLY = arg('only', undefined)
// --issue: run the scenarios at the issue's scale instead of the short ones.
const ISSUE = process.argv.includes('--issue')

function rssOf(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch (_) {
    return 0
  }
}

/** GET /ping every 100 ms on a fresh connection (as a load balancer probes) until told
 *  to stop; sends back every probe's latency split into connect (the TCP handshake, which
 *  only waits if the kernel's accept queue dropped the SYN, or if this process did not
 *  get a core to send it) and the rest (accept, reading the request, answering), and
 *  failures with their reasons.
 *
 *  It runs as a process of its own, at nice -5 where it may (as root): as a worker thread
 *  of the benchmark, a packet capture of the issue's attacks (tcpdump on lo) showed the
 *  probes' slow "connects" (80–280 ms) were the probe's SYN leaving that late after the
 *  probe started — the benchmark process, busy with the attack's clients, not the server
 *  (which answered those probes within 1–7 ms of their request arriving). */
const PROBER = `
const http = require('node:http')
const os = require('node:os')
const workerData = JSON.parse(process.argv[1])
let nice = 0
try { os.setPriority(-5); nice = -5 } catch (_) {}
const parentPort = { postMessage: m => process.send({ ...m, nice }, () => process.exit(0)) }
let stop = false, pingFail = 0
const probes = []
const failures = []
const slow = []
const start = Date.now()
process.on('message', () => { stop = true })
const once = () => new Promise(resolve => {
  const t0 = Date.now()
  let connectMs = null
  let finished = false
  let localPort = null
  const done = (ok, why) => {
    if (finished) return
    finished = true
    const ms = Date.now() - t0
    if (!ok) {
      pingFail++
      failures.push({ at: t0 - start, ms, connectMs, why })
    }
    // The slow and the failed ones in detail (wall clock and local port), to be found in
    // a packet capture of the run (tcpdump -tt).
    if (!ok || ms > 100) slow.push({ t0, ms, connectMs, localPort, why: ok ? 'slow' : why })
    probes.push({ at: t0 - start, ms, connectMs })
    resolve()
  }
  const req = http.get({ host: workerData.host, port: workerData.port, path: '/ping', agent: false, timeout: 5000 }, res => {
    res.resume()
    res.on('end', () => done(res.statusCode === 200, 'status ' + res.statusCode))
    res.on('error', e => done(false, 'answer ' + (e.code || e.message)))
  })
  req.on('socket', s => s.on('connect', () => {
    connectMs = Date.now() - t0
    localPort = s.localPort
  }))
  req.on('timeout', () => req.destroy(new Error('timeout')))
  req.on('error', e => done(false, (connectMs === null ? 'connect ' : 'request ') + (e.code || e.message)))
})
;(async () => {
  while (!stop) {
    await once()
    await new Promise(r => setTimeout(r, 100))
  }
  parentPort.postMessage({ probes, pingFail, failures, slow })
})()
`

/** The kernel's TCP counters of listen-queue overflows and drops (namespace-wide). */
function listenDrops() {
  try {
    const lines = fs.readFileSync('/proc/net/netstat', 'utf8').split('\n').filter(l => l.startsWith('TcpExt:'))
    const keys = lines[0].split(/\s+/)
    const vals = lines[1].split(/\s+/)
    return Number(vals[keys.indexOf('ListenOverflows')]) + Number(vals[keys.indexOf('ListenDrops')])
  } catch (_) {
    return 0
  }
}

/** CPU time, time spent runnable but waiting for a CPU, and runs, per thread name of
 *  process `pid` since it started (/proc/PID/task/TID/schedstat): how long a thread
 *  that was woken waited for a core. */
function threadSched(pid) {
  const out = {}
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const comm = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      const [cpu, wait, runs] = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number)
      const o = (out[comm] = out[comm] || { threads: 0, cpuMs: 0, waitMs: 0, runs: 0 })
      o.threads++
      o.cpuMs += cpu / 1e6
      o.waitMs += wait / 1e6
      o.runs += runs
    }
  } catch (_) {}
  return out
}

/** A thread group's figures in a short string: CPU ms, mean wait for a core per run. */
function schedSummary(s) {
  if (!s) return '-'
  return `${s.threads} thr, cpu ${Math.round(s.cpuMs)} ms, wait ${(s.waitMs / Math.max(1, s.runs)).toFixed(2)} ms/run over ${s.runs} runs`
}

/** Connections completed and waiting in `port`'s accept queue (the listening socket's
 *  rx_queue in /proc/net/tcp). */
function acceptQueue(port) {
  try {
    const hex = port.toString(16).toUpperCase().padStart(4, '0')
    for (const l of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
      const f = l.trim().split(/\s+/)
      if (f[3] === '0A' && f[1] && f[1].endsWith(':' + hex)) return parseInt(f[4].split(':')[1], 16)
    }
  } catch (_) {}
  return 0
}

/** Sample RSS and /ping while `work` runs; kill the server past the guard. */
async function measure(server, work) {
  const pid = server.proc.pid
  let peak = 0
  let queueMax = 0
  let probes = []
  let pingFail = 0
  let failures = []
  let slowProbes = []
  let guardHit = false
  let running = true
  const drops0 = listenDrops()
  const load0 = os.loadavg()[0]
  const sampler = (async () => {
    while (running) {
      const r = rssOf(pid)
      peak = Math.max(peak, r)
      queueMax = Math.max(queueMax, acceptQueue(server.port))
      if (r > GUARD && !guardHit) {
        guardHit = true
        server.proc.kill('SIGKILL')
      }
      await sleep(50)
    }
  })()
  // The prober is a process of its own (see PROBER): this one is busy with the attack's
  // clients (reading forty 16 MiB answers stalls its event loop for seconds; as a worker
  // thread here the probes still left late), which would be counted as the server's.
  const prober = spawn(process.execPath, ['-e', PROBER, JSON.stringify({ host: HOST, port: server.port })], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  let proberNice = null
  const pinger = new Promise(resolve => {
    prober.on('message', m => {
      probes = m.probes
      pingFail = m.pingFail
      failures = m.failures
      slowProbes = m.slow
      proberNice = m.nice
      resolve()
    })
    prober.on('exit', () => resolve())
    prober.on('error', () => resolve())
  })
  // Its first probe once it runs (node's start-up is not a probe's latency).
  await new Promise(r => prober.once('spawn', r))
  const t0 = Date.now()
  let result
  try {
    result = await work()
  } catch (e) {
    result = { error: e.message }
  }
  const ms = Date.now() - t0
  const sched = threadSched(pid)
  running = false
  prober.send('stop')
  await Promise.all([sampler, pinger])
  prober.kill()
  const load1 = os.loadavg()[0]
  const worst = probes.reduce((w, p) => (!w || p.ms > w.ms ? p : w), null) || { ms: 0, at: 0, connectMs: null }
  const lat = probes.map(p => p.ms)
  return {
    peakMiB: Math.round(peak / MIB),
    pingMaxMs: worst.ms,
    pingMaxAtMs: worst.at,
    pingMaxConnectMs: worst.connectMs,
    pingP99Ms: pct(lat, 99),
    pingP50Ms: pct(lat, 50),
    pings: probes.length,
    pingOver100: lat.filter(x => x > 100).length,
    pingConnectOver100: probes.filter(p => p.connectMs > 100).length,
    pingFail,
    pingFailures: tallyFailures(failures),
    proberNice,
    slowProbes,
    acceptQueueMax: queueMax,
    listenDrops: listenDrops() - drops0,
    load: `${load0.toFixed(1)}–${load1.toFixed(1)}`,
    acceptThread: schedSummary(sched['tally-accept']),
    runtimeThreads: schedSummary(sched['tokio-rt-worker'] || sched['tokio-runtime-w']),
    guardHit,
    ms,
    ...result,
  }
}

/** Failed probes by reason, with when (ms into the run) the first and last of each
 *  were sent: "request ECONNRESET ×11 (at 636–7,120 ms)". */
function tallyFailures(failures) {
  const by = new Map()
  for (const f of failures) {
    const o = by.get(f.why) || { n: 0, first: f.at, last: f.at }
    o.n++
    o.last = f.at
    by.set(f.why, o)
  }
  return [...by].map(([why, o]) => `${why} ×${o.n} (at ${o.first}–${o.last} ms)`).join('; ')
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

/** This process's soft limit on open files. */
function ownFdLimit() {
  try {
    const m = /Max open files\s+(\d+)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'))
    return m ? Number(m[1]) : 1024
  } catch (_) {
    return 1024
  }
}

/** issueConnFlood's scale: the issue's 25,000 sockets against 20,000 descriptors, or,
 *  when this process may open fewer, its limit less 1,000 against four fifths of that. */
const CONN_FLOOD = (() => {
  const own = ownFdLimit()
  if (own >= 26_000) return { sockets: 25_000, serverFds: 20_000 }
  const sockets = own - 1_000
  return { sockets, serverFds: Math.floor((sockets * 4) / 5) }
})()

/** A server binary wrapper that starts tally with at most `nofile` file descriptors. */
function limitedBin(nofile) {
  const real = BIN || path.join(__dirname, '..', '..', '..', 'target', 'release', 'tally')
  const wrapper = path.join(os.tmpdir(), `tally-nofile-${nofile}-${process.pid}.sh`)
  fs.writeFileSync(wrapper, `#!/bin/sh\nulimit -n ${nofile} || exit 1\nexec ${path.resolve(real)} "$@"\n`, { mode: 0o755 })
  return wrapper
}

/** POST `body` on an HTTP/2 session; resolves {status, ms, code, serverMs} (status null on
 *  error; serverMs: the server's own x-query-time, from the request read to the answer). */
function h2post(session, key, body, timeoutMs = 120_000) {
  return new Promise(resolve => {
    const t0 = Date.now()
    let status = null
    let serverMs = null
    let data = ''
    let done = false
    let err = null
    let timer = null
    const finish = () => {
      if (done) return
      done = true
      clearTimeout(timer)
      const m = /"code":"([^"]+)"/.exec(data)
      resolve({ status, ms: Date.now() - t0, code: m ? m[1] : err, serverMs })
    }
    let st
    try {
      st = session.request({ ':method': 'POST', ':path': '/', authorization: `Bearer ${key}`, 'content-type': 'application/json' })
    } catch (e) {
      err = `client ${e.code || e.message}`
      return finish()
    }
    timer = setTimeout(() => st.close(), timeoutMs)
    st.setEncoding('utf8')
    st.on('response', h => {
      status = h[':status']
      if (h['x-query-time'] !== undefined) serverMs = Number(h['x-query-time'])
    })
    st.on('data', d => (data += d))
    st.on('end', finish)
    st.on('close', finish)
    st.on('error', e => {
      err = `client ${e.code || e.message}`
      finish()
    })
    st.end(body)
  })
}

/** Opens `n` raw sockets; resolves them with a count of those closed by the server. */
async function openSockets(port, n) {
  const state = { socks: [], closed: 0, failed: 0 }
  for (let i = 0; i < n; i++) {
    await new Promise(resolve => {
      const s = net.connect({ host: HOST, port }, resolve)
      s.on('error', () => {
        state.failed++
        resolve()
      })
      s.on('close', () => state.closed++)
      state.socks.push(s)
    })
  }
  return state
}

const pct = (xs, p) => {
  if (!xs.length) return null
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
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

  // --- the attacks at the issue's own scale ---

  // Nothing at all for 15 s: the /ping figures of an idle server on this machine now,
  // the noise floor the attacks' figures are read against (the machine is shared).
  async issueIdle() {
    await sleep(15_000)
    return { work: 'idle 15 s' }
  },

  // Fifty copies at once of the 200-byte query that builds a 1.6 GB answer.
  async issueAttack50(server) {
    const attack = q.Let(
      { x: q.Repeat('a', 16 * MIB) },
      q.Map(q.NGram(q.Repeat('a', 100), 1, 1), q.Lambda('_', q.Var('x')))
    )
    const t0 = Date.now()
    const rs = await Promise.all(Array.from({ length: 50 }, () => post(server, attack, 120_000)))
    return { work: `50 attack queries by status ${tally(rs.map(r => r.status))} in ${Date.now() - t0} ms` }
  },
  // Two hundred HTTP/1.1 clients ask for a 16 MiB answer and never read it (held 20 s).
  async issueSlowReaders200(server) {
    const query = JSON.stringify(q.wrap(q.Map(q.NGram(q.Repeat('a', 16), 1, 1), q.Lambda('_', q.Repeat('b', MIB)))))
    const socks = []
    let firstBytes = 0
    for (let i = 0; i < 200; i++) {
      const s = net.connect({ host: HOST, port: server.port })
      s.on('error', () => {})
      s.once('readable', () => firstBytes++)
      s.pause()
      s.write(
        `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.rootKey}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(query)}\r\n\r\n${query}`
      )
      socks.push(s)
    }
    await sleep(20_000)
    // What did the unread ones get? Read the status line of each.
    const heads = await Promise.all(
      socks.map(
        s =>
          new Promise(resolve => {
            if (s.destroyed) return resolve('closed')
            const t = setTimeout(() => resolve('nothing'), 2_000)
            s.once('data', d => {
              clearTimeout(t)
              resolve(/^HTTP\/1\.1 (\d+)/.exec(d.toString('latin1'))?.[1] || 'data')
            })
            s.resume()
          })
      )
    )
    for (const s of socks) s.destroy()
    return { work: `200 unread 16 MiB answers held 20 s; status lines ${tally(heads)}` }
  },
  // Five HTTP/2 connections with a zero flow-control window, 200 streams of 16 MiB each.
  async issueH2ShutWindow(server) {
    const body = JSON.stringify(q.wrap(q.Map(q.NGram(q.Repeat('a', 16), 1, 1), q.Lambda('_', q.Repeat('b', MIB)))))
    const sessions = []
    const statuses = []
    let sessionsClosed = 0
    for (let c = 0; c < 5; c++) {
      const session = http2.connect(`http://${HOST}:${server.port}`, { settings: { initialWindowSize: 0 } })
      session.on('error', () => {})
      session.on('close', () => sessionsClosed++)
      sessions.push(session)
      for (let i = 0; i < 200; i++) {
        let st
        try {
          st = session.request({ ':method': 'POST', ':path': '/', authorization: `Bearer ${server.rootKey}`, 'content-type': 'application/json' })
        } catch (_) {
          statuses.push('refused')
          continue
        }
        st.on('response', h => statuses.push(h[':status']))
        st.on('error', () => {})
        st.end(body)
      }
    }
    await sleep(20_000)
    const closedBefore = sessionsClosed
    for (const s of sessions) s.destroy()
    return { work: `5 sessions × 200 streams, shut windows, 20 s: heads by status ${tally(statuses)}; ${closedBefore} sessions closed by the server` }
  },
  // Sixty-four writers post 16 MiB Do-of-Creates back to back for 30 s.
  async issueBigWrites(server) {
    await post(server, q.CreateCollection({ name: 'flood' }))
    const pad = 'x'.repeat(1000)
    const body = JSON.stringify(q.wrap(q.Do(...Array.from({ length: 15_000 }, () => q.Create(q.Collection('flood'), { data: { pad } })))))
    const statuses = []
    const until = Date.now() + 30_000
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (Date.now() < until) {
          const r = await rawRequest(server.port, {
            headers: { authorization: `Bearer ${server.rootKey}`, 'content-type': 'application/json' },
            body,
            timeoutMs: 120_000,
          }).catch(e => ({ status: null, body: e.code || e.message }))
          statuses.push(r.status === null ? `error ${r.body}` : r.status)
          if (r.status !== 200 && r.status !== 201) await sleep(200)
        }
      })
    )
    const count = await post(server, q.Count(q.Documents(q.Collection('flood'))), 120_000)
    const acked = statuses.filter(s => s === 200 || s === 201).length
    await sleep(12_000)
    const settled = Math.round(rssOf(server.proc.pid) / MIB)
    return {
      work: `${(Buffer.byteLength(body) / MIB).toFixed(1)} MiB writes by status ${tally(statuses)}; documents ${count.body} (acknowledged ${acked * 15_000}); RSS 12 s after: ${settled} MiB`,
    }
  },
  // Eighty thousand small writes at once (400 HTTP/2 connections × 200 streams).
  async issueSmallWrites80k(server) {
    await post(server, q.CreateCollection({ name: 'small' }))
    const body = JSON.stringify(q.wrap(q.Create(q.Collection('small'), { data: { n: 1 } })))
    const sessions = Array.from({ length: 400 }, () => {
      const s = http2.connect(`http://${HOST}:${server.port}`)
      s.on('error', () => {})
      return s
    })
    // Connected (preface sent) before the 80,000 streams are made: on a loaded machine
    // making them takes this thread more than the server's 10 s head timeout, which
    // closed every session before its first byte and cancelled every write.
    await Promise.all(sessions.map(s => new Promise(resolve => (s.connecting ? s.once('connect', resolve) : resolve()))))
    const t0 = Date.now()
    // Made 2,000 at a time with the event loop let run between: made in one go, 80,000
    // streams kept this thread busy for 30 s on the loaded machine, and the sessions were
    // lost before any request left (every write cancelled, nothing reached the server).
    const pending = []
    for (let i = 0; i < 80_000; i++) {
      pending.push(h2post(sessions[i % 400], server.rootKey, body, 180_000))
      if (i % 2_000 === 1_999) await new Promise(setImmediate)
    }
    const rs = await Promise.all(pending)
    const wall = Date.now() - t0
    for (const s of sessions) s.close()
    const ok = rs.filter(r => r.status === 200 || r.status === 201)
    const over = rs.filter(r => r.status === 503 || r.status === 429)
    const count = await post(server, q.Count(q.Documents(q.Collection('small'))), 60_000)
    return {
      work:
        `80,000 writes in ${wall} ms: by status ${tally(rs.map(r => r.status))}, codes ${tally(rs.map(r => r.code))}; ` +
        `committed p50/max ${pct(ok.map(r => r.ms), 50)}/${pct(ok.map(r => r.ms), 100)} ms; ` +
        `refused p50/max ${pct(over.map(r => r.ms), 50)}/${pct(over.map(r => r.ms), 100)} ms; ` +
        `server x-query-time of committed p50/max ${pct(ok.map(r => r.serverMs), 50)}/${pct(ok.map(r => r.serverMs), 100)} ms; ` +
        `documents ${count.body} (acknowledged ${ok.length})`,
    }
  },
  // 25,000 idle sockets against a server limited to 20,000 file descriptors; then a query.
  // Where this process may not open that many (its hard RLIMIT_NOFILE), both are scaled
  // down (CONN_FLOOD), keeping more sockets than the server's cap.
  async issueConnFlood(server) {
    const t = Date.now()
    const st = await openSockets(server.port, CONN_FLOOD.sockets)
    const openMs = Date.now() - t
    await sleep(3_000)
    const t0 = Date.now()
    const r = await post(server, q.Add(1, 2), 10_000)
    const qms = Date.now() - t0
    const open = st.socks.length - st.closed
    for (const s of st.socks) s.destroy()
    return { work: `${CONN_FLOOD.sockets} sockets against ${CONN_FLOOD.serverFds} descriptors (${st.failed} failed to connect; opened in ${openMs} ms), ${st.closed} closed by the server, ${open} open; a query then: ${r.status} in ${qms} ms` }
  },
  // Two thousand slowloris heads (a header line a second), then a query.
  async issueSlowloris(server) {
    const socks = []
    let closed = 0
    for (let i = 0; i < 2000; i++) {
      const s = net.connect({ host: HOST, port: server.port })
      s.on('error', () => {})
      s.on('close', () => closed++)
      s.write('POST / HTTP/1.1\r\nHost: x\r\n')
      socks.push(s)
    }
    const timer = setInterval(() => {
      for (const s of socks) if (!s.destroyed) s.write('X-Slow: 1\r\n')
    }, 1_000)
    await sleep(15_000)
    clearInterval(timer)
    const r = await post(server, q.Add(1, 2), 10_000)
    const c = closed
    for (const s of socks) s.destroy()
    return { work: `2000 slowloris heads, ${c} closed by the server within 15 s; a query then: ${r.status}` }
  },
  // Two hundred uploads announce 16 MiB, send 1 MiB and stall; held 40 s.
  async issueStalledUploads(server) {
    const socks = []
    let closed = 0
    const heads = []
    const chunk = '{"add": [' + '1,'.repeat(MIB / 2 - 8)
    for (let i = 0; i < 200; i++) {
      const s = net.connect({ host: HOST, port: server.port })
      s.on('error', () => {})
      s.on('close', () => closed++)
      s.once('data', d => heads.push(/^HTTP\/1\.1 (\d+)/.exec(d.toString('latin1'))?.[1] || 'data'))
      s.write(
        `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.rootKey}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${16 * MIB}\r\n\r\n` + chunk
      )
      socks.push(s)
    }
    await sleep(40_000)
    const r = await post(server, q.Add(1, 2), 10_000)
    const c = closed
    for (const s of socks) s.destroy()
    return { work: `200 stalled 16 MiB uploads: answers ${tally(heads)}, ${c} closed by the server within 40 s; a query then: ${r.status}` }
  },
  // Eight clients send NGram of a 1M string back to back for 15 s.
  async issueNGram1M(server) {
    const big = q.Count(q.NGram(q.Repeat('a', 1_000_000), 1, 1))
    const statuses = []
    const until = Date.now() + 15_000
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (Date.now() < until) statuses.push((await post(server, big, 120_000)).status)
      })
    )
    return { work: `NGram(1M) queries by status ${tally(statuses)}` }
  },
  // Documents of 16 MiB (--big-docs, default 64): a page of one ref, a count, and
  // pages of the documents themselves read by four clients at once.
  async issueBigListing(server) {
    const n = Number(arg('big-docs', 64))
    await post(server, q.CreateCollection({ name: 'big' }))
    const doc = JSON.stringify(q.wrap(q.Create(q.Collection('big'), { data: { s: q.Repeat('a', 16 * MIB - 1024) } })))
    const t0 = Date.now()
    for (let i = 0; i < n; i += 4) {
      await Promise.all([0, 1, 2, 3].map(() =>
        rawRequest(server.port, { headers: { authorization: `Bearer ${server.rootKey}`, 'content-type': 'application/json' }, body: doc, timeoutMs: 120_000 })
      ))
    }
    const loadMs = Date.now() - t0
    const timed = async query => {
      const t = Date.now()
      const r = await post(server, query, 120_000)
      return { ms: Date.now() - t, ops: r.headers && r.headers['x-byte-read-ops'], status: r.status }
    }
    const page = await timed(q.Paginate(q.Documents(q.Collection('big')), { size: 1 }))
    const count = await timed(q.Count(q.Documents(q.Collection('big'))))
    const t1 = Date.now()
    const gets = await Promise.all(
      [0, 1, 2, 3].map(() => post(server, q.Map(q.Paginate(q.Documents(q.Collection('big')), { size: 4 }), q.Lambda('r', q.Get(q.Var('r')))), 120_000))
    )
    return {
      work:
        `${n} × 16 MiB loaded in ${loadMs} ms; page of 1: ${page.ms} ms, ${page.ops} read ops; count: ${count.ms} ms, ${count.ops} read ops (${count.status}); ` +
        `4 × Map(Get) pages of 4 big documents: ${tally(gets.map(r => r.status))} in ${Date.now() - t1} ms`,
    }
  },
}

async function main() {
  const rows = []
  for (const [name, run] of Object.entries(scenarios)) {
    if (ONLY ? !ONLY.split(',').includes(name) : name.startsWith('issue') !== ISSUE) continue
    const bin = name === 'issueConnFlood' ? limitedBin(CONN_FLOOD.serverFds) : BIN
    const server = new TallyServer({ bin })
    await server.start()
    const r = await measure(server, () => run(server))
    await server.stop()
    rows.push({ name, ...r })
    console.log(JSON.stringify(rows[rows.length - 1]))
  }
  console.log('\n| scenario | peak RSS MiB | worst /ping ms (at ms; its connect ms) | p99 / p50 /ping ms | pings > 100 ms (connect > 100 ms) of n | ping failures | accept queue max, listen drops | load avg | guard hit | time ms | work | server threads: accept; runtime |')
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.peakMiB} | ${r.pingMaxMs} (${r.pingMaxAtMs}; ${r.pingMaxConnectMs}) | ${r.pingP99Ms} / ${r.pingP50Ms} | ${r.pingOver100} (${r.pingConnectOver100}) of ${r.pings} | ${r.pingFail}${r.pingFailures ? ` (${r.pingFailures})` : ''} | ${r.acceptQueueMax}, ${r.listenDrops} | ${r.load} | ${r.guardHit ? 'yes' : 'no'} | ${r.ms} | ${r.work || r.error} | ${r.acceptThread}; ${r.runtimeThreads} |`
    )
  }
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
