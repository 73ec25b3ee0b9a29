'use strict'
// `tally shell` against a real server: --eval, --file, standard input, --database, errors
// and exit codes, answers printed as the driver prints the same values, and the REPL in a
// pseudo-terminal (util-linux `script`): multi-line input, .help, the secret prompt, and a
// history file that holds neither the secret nor a password.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { startServer, q, sleep } = require('./helpers/server')

let server

function bin() {
  return server.bin
}

/** Runs `tally shell ARGS` to completion: {status, stdout, stderr}. */
function shell(args, { secret = server.rootKey, input, env = {} } = {}) {
  const r = spawnSync(bin(), ['shell', '--endpoint', `http://127.0.0.1:${server.port}`, ...args], {
    input: input ?? '',
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: process.env.PATH, HOME: os.tmpdir(), TALLY_SECRET: secret, ...env },
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

// Temporary directories of this file, removed when its tests end.
const tmpDirs = []
function tmpDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  tmpDirs.push(dir)
  return dir
}

function tmpFile(name, text) {
  const dir = tmpDir('tally-shell-')
  const p = path.join(dir, name)
  fs.writeFileSync(p, text)
  return p
}

describe('tally shell', { timeout: 180_000 }, () => {
  before(async () => {
    server = await startServer()
    const admin = server.adminClient()
    await admin.query(q.CreateCollection({ name: 'players' }))
    await admin.query(q.CreateCollection({ name: 'items' }))
    await admin.query(q.CreateDatabase({ name: 'child' }))
    const childKey = await admin.query(q.CreateKey({ database: q.Database('child'), role: 'admin' }))
    await server.client(childKey.secret).query(q.CreateCollection({ name: 'inner' }))
  })

  after(async () => {
    if (server) await server.stop()
    for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true })
  })

  it("--eval 'Paginate(Collections())' prints the collections", () => {
    const r = shell(['--eval', 'Paginate(Collections())'])
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /data: \[Collection\("(players|items)"\), Collection\("(players|items)"\)\]/)
  })

  it('--file runs each expression in order and prints values as the driver does', async () => {
    const script = tmpFile('s.fql', `
      // a document, then reading it back
      Create(Ref(Collection("players"), "101"), {data: {name: "Alice", tags: ["a", 'b'], joined: Date("2024-01-02")}});
      Select(["data"], Get(Ref(Collection("players"), "101")))
      CreateFunction({name: "inc", body: Query(x => Add(x, 1))})
      Select("body", Get(Function("inc")))
      Call(Function("inc"), 41)
      CreateIndex({name: "by_name", source: Collection("players"), terms: [{field: ["data", "name"]}]})
      [Time("2024-01-02T03:04:05Z"), Bytes("AQID"), 1.5, null]
      Match(Index("by_name"), "t")
      Paginate(Collections(Database("child")))
    `)
    const r = shell(['--file', script])
    assert.equal(r.status, 0, r.stderr)
    const out = r.stdout
    // The same values through the driver, printed by the driver's own toString.
    const admin = server.adminClient()
    const doc = await admin.query(q.Get(q.Ref(q.Collection('players'), '101')))
    assert.ok(out.includes(doc.ref.toString()), `${doc.ref} in ${out}`)
    assert.equal(doc.ref.toString(), 'Ref(Collection("players"), "101")')
    // Tally answers with object keys sorted.
    assert.match(out, /^\{ joined: Date\("2024-01-02"\), name: "Alice", tags: \["a", "b"\] \}$/m)
    const fn = await admin.query(q.Select('body', q.Get(q.Function('inc'))))
    assert.ok(out.includes(fn.toString()), `${fn} in ${out}`)
    assert.match(out, /Query\(Lambda\("x", Add\(Var\("x"\), 1\)\)\)/)
    assert.match(out, /^42$/m)
    assert.ok(out.includes('[Time("2024-01-02T03:04:05Z"), Bytes("AQID"), 1.5, null]'), out)
    const set = await admin.query(q.Match(q.Index('by_name'), 't'))
    assert.ok(out.includes(set.toString()), `${set} in ${out}`)
    const child = await admin.query(q.Paginate(q.Collections(q.Database('child'))))
    assert.ok(out.includes(child.data[0].toString()), `${child.data[0]} in ${out}`)
    assert.ok(out.includes('Collection("inner", Database("child"))'), out)
  })

  it('stops a script at the first error, with code, description and position; exit 1', async () => {
    const script = tmpFile('e.fql', `Add(1, 2)\nDo(1, Abort("stop here"))\nCreateCollection({name: "never"})\n`)
    const r = shell(['--file', script])
    assert.equal(r.status, 1)
    assert.match(r.stdout, /^3$/m)
    assert.match(r.stderr, /\[transaction aborted\] stop here/)
    assert.match(r.stderr, /at position \["do", 1\]/)
    assert.match(r.stderr, /line 2/)
    const exists = await server.adminClient().query(q.Exists(q.Collection('never')))
    assert.equal(exists, false, 'the expression after the error must not run')
    // A failing function call shows the error inside it.
    const call = shell(['--eval', 'Do(CreateFunction({name: "bad", body: Query(x => Abort("inner"))}), Call(Function("bad"), 1))'])
    assert.equal(call.status, 1)
    assert.match(call.stderr, /\[call error\][\s\S]*caused by: \[transaction aborted\] inner/)
    // Validation failures list the fields.
    const invalid = shell(['--eval', 'CreateCollection({name: 1})'])
    assert.equal(invalid.status, 1)
    assert.match(invalid.stderr, /\[validation failed\][\s\S]*field \["name"\]/)
  })

  it('a syntax error is reported with line, column and a caret; nothing is sent', () => {
    const r = shell(['--eval', 'Paginate(\n  Colections())'])
    assert.equal(r.status, 1)
    assert.match(r.stderr, /Syntax error: line 2, column 3: unknown function Colections; did you mean Collections\?/)
    assert.match(r.stderr, /\n {4}Colections\(\)\)\n {4}\^/)
    assert.equal(r.stdout, '')
  })

  it('--database scopes the root key to a child database', () => {
    const r = shell(['--database', 'child', '--eval', 'Paginate(Collections())'])
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /data: \[Collection\("inner"\)\]/)
    const denied = shell(['--database', 'child', '--role', 'client', '--eval', 'Paginate(Collections())'])
    assert.equal(denied.status, 1)
    assert.match(denied.stderr, /\[permission denied\]/)
  })

  it('a wrong secret is unauthorized; --json prints wire JSON; stdin is a script', () => {
    const bad = shell(['--eval', 'Now()'], { secret: 'not-a-secret' })
    assert.equal(bad.status, 1)
    assert.match(bad.stderr, /\[unauthorized\]/)
    const json = shell(['--json', '--eval', 'Get(Collection("players"))'])
    assert.equal(json.status, 0, json.stderr)
    const wire = JSON.parse(json.stdout)
    assert.deepEqual(wire.ref, { '@ref': { id: 'players', collection: { '@ref': { id: 'collections' } } } })
    const piped = shell([], { input: 'Add(1, 2); Concat(["a", "b"], "-")\n' })
    assert.equal(piped.status, 0, piped.stderr)
    assert.equal(piped.stdout, '3\n"a-b"\n')
    const none = shell(['--eval', 'Now()'], { secret: '' })
    assert.equal(none.status, 1)
    assert.match(none.stderr, /no secret/)
  })

  it('Ctrl-C drops a query that does not answer; the script exits 1', async () => {
    // A listener that accepts and never answers stands in for a long query.
    const net = require('node:net')
    const silent = net.createServer(() => {})
    await new Promise(r => silent.listen(0, '127.0.0.1', r))
    const child = spawn(bin(), ['shell', '--endpoint', `http://127.0.0.1:${silent.address().port}`, '--eval', 'Now()'], {
      env: { PATH: process.env.PATH, HOME: os.tmpdir(), TALLY_SECRET: 'x' },
    })
    let err = ''
    child.stderr.on('data', d => (err += d.toString()))
    const exited = new Promise(r => child.on('exit', code => r(code)))
    // Wait until the query is on the wire, then interrupt.
    const connected = new Promise(r => silent.once('connection', r))
    await connected
    await sleep(200)
    child.kill('SIGINT')
    const code = await Promise.race([exited, sleep(10_000).then(() => 'hung')])
    silent.close()
    assert.equal(code, 1, err)
    assert.match(err, /interrupted/)
  })

  const hasScript = spawnSync('script', ['--version']).status === 0
  it('REPL: prompt for the secret, multi-line input, .help, history without secrets', { skip: hasScript ? false : 'needs util-linux script(1) for a pseudo-terminal' }, async () => {
    const history = path.join(tmpDir('tally-hist-'), 'history')
    const cmd = [bin(), 'shell', '--endpoint', `http://127.0.0.1:${server.port}`].map(a => `'${a}'`).join(' ')
    // `script` runs the shell on a pseudo-terminal, as a person would.
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], {
      env: { PATH: process.env.PATH, HOME: os.tmpdir(), TERM: 'dumb', TALLY_SHELL_HISTORY: history },
    })
    let out = ''
    child.stdout.on('data', d => (out += d.toString()))
    child.stderr.on('data', d => (out += d.toString()))
    const exited = new Promise(r => child.on('exit', code => r(code)))
    const waitFor = async (re, what) => {
      for (let i = 0; i < 300 && !re.test(out); i++) await sleep(50)
      assert.match(out, re, `waiting for ${what}`)
    }
    const type = async (line, re, what) => {
      const mark = out.length
      child.stdin.write(line + '\r')
      for (let i = 0; i < 300 && !re.test(out.slice(mark)); i++) await sleep(50)
      assert.match(out.slice(mark), re, `${what}: ${JSON.stringify(out.slice(mark))}`)
    }
    await waitFor(/Secret: /, 'the secret prompt')
    await type(server.rootKey, /tally> /, 'the prompt after the secret')
    await type('Add(1,', /\.\.\.> /, 'a continuation prompt')
    await type('  41)', /42[\s\S]*tally> /, 'the multi-line answer')
    await type('.help', /\.exit[\s\S]*tally> /, 'help')
    await type('Login(Ref(Collection("players"), "101"), {password: "hunter2-pw"})', /Error: \[[a-z ]+\][\s\S]*tally> /, 'a failed login')
    await type('Nope(', /\.\.\.> /, 'an open bracket')
    await type(')', /unknown function Nope[\s\S]*tally> /, 'a syntax error')
    child.stdin.write('.exit\r')
    assert.equal(await Promise.race([exited, sleep(10_000).then(() => 'hung')]), 0)
    assert.ok(!out.includes(server.rootKey), 'the secret is never echoed')
    const saved = fs.readFileSync(history, 'utf8')
    assert.match(saved, /Add\(1,/)
    assert.match(saved, /41\)/)
    assert.match(saved, /\.help/)
    assert.ok(!saved.includes(server.rootKey), 'no secret in the history file')
    assert.ok(!saved.includes('hunter2-pw'), 'no password in the history file')
  })

  it('REPL: the history file is loaded, and Up recalls its last entry (secret from the environment, no prompt)', { skip: hasScript ? false : 'needs util-linux script(1) for a pseudo-terminal' }, async () => {
    const history = path.join(tmpDir('tally-hist-'), 'history')
    fs.writeFileSync(history, 'Add(1, 2)\nMultiply(6, 7)\n')
    const cmd = [bin(), 'shell', '--endpoint', `http://127.0.0.1:${server.port}`].map(a => `'${a}'`).join(' ')
    // A terminal with line editing (TERM=dumb turns it off), as a person's would be.
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], {
      env: { PATH: process.env.PATH, HOME: os.tmpdir(), TERM: 'xterm', TALLY_SHELL_HISTORY: history, TALLY_SECRET: server.rootKey },
    })
    let out = ''
    child.stdout.on('data', d => (out += d.toString()))
    child.stderr.on('data', d => (out += d.toString()))
    const exited = new Promise(r => child.on('exit', code => r(code)))
    const waitFor = async (re, from, what) => {
      for (let i = 0; i < 300 && !re.test(out.slice(from)); i++) await sleep(50)
      assert.match(out.slice(from), re, `waiting for ${what}: ${JSON.stringify(out)}`)
    }
    await waitFor(/tally> /, 0, 'the prompt, with no secret prompt before it')
    assert.doesNotMatch(out, /Secret: /)
    let mark = out.length
    child.stdin.write('\x1b[A') // Up
    await waitFor(/Multiply\(6, 7\)/, mark, 'the recalled entry')
    mark = out.length
    child.stdin.write('\r')
    await waitFor(/42/, mark, 'its answer')
    child.stdin.write('.exit\r')
    assert.equal(await Promise.race([exited, sleep(10_000).then(() => 'hung')]), 0)
    assert.ok(!fs.readFileSync(history, 'utf8').includes(server.rootKey), 'no secret in the history file')
  })
})
