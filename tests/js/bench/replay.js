'use strict'
// Replay benchmark (not a test, CI does not run it): how fast a node replays its input
// log on restart. Writes a log of small transfers with `tally bench transfer` against a
// fresh node, stops it, moves its state store aside (so the whole log is replayed, as
// after a lost state store; a crash replays only what follows the last checkpoint, about
// a second's worth), starts it again and prints what the node says it replayed.
//
//   node tests/js/bench/replay.js [--bin path/to/tally] [--seconds 20] [--clients 64]

const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { TallyServer } = require(path.join(__dirname, '..', 'helpers', 'server'))

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : dflt
}

async function main() {
  const bin = arg('bin', undefined)
  const server = new TallyServer({ bin })
  await server.start()
  execFileSync(
    server.bin,
    ['bench', 'transfer', '--endpoint', server.url, '--root-key', server.rootKey, '--accounts', '10000',
      '--clients', arg('clients', '64'), '--duration', arg('seconds', '20'), '--warmup', '0'],
    { stdio: ['ignore', 'ignore', 'inherit'] }
  )
  await server.stop({ keepData: true })
  const state = path.join(server.dataDir, 'state.redb')
  fs.renameSync(state, state + '.aside')
  const again = new TallyServer({ bin, dataDir: server.dataDir, rootKey: server.rootKey })
  const t0 = Date.now()
  await again.start()
  const readyMs = Date.now() - t0
  const line = /tally replayed .*/.exec(again.output)
  await again.stop()
  fs.rmSync(server.dataDir, { recursive: true, force: true })
  console.log(line ? line[0] : 'no replay line (a build without it?)')
  console.log(`ready to serve ${readyMs} ms after start`)
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
