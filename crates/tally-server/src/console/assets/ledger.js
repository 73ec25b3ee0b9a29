// The ledger: the head and the newest blocks. Each block's hash is recomputed here, in
// the browser, from its header fields (SHA-256 over "tally.block.v2\0" and the 165-byte
// big-endian encoding, tally-ledger block.rs, docs/ledger.md), and each block's prev_hash is checked
// against the hash of the block below it.

import { ledger } from './api.js'
import { h, mount, card, table, errorLine, isoTs, guarded } from './ui.js'

const TAG = new TextEncoder().encode('tally.block.v2\0')
const HEADER_LEN = 165
const PAGE = 20

function hexBytes(hex) {
  const out = new Uint8Array(hex.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16)
  return out
}

function encodeHeader(hd) {
  const buf = new Uint8Array(HEADER_LEN)
  const dv = new DataView(buf.buffer)
  dv.setUint8(0, hd.version)
  dv.setBigUint64(1, BigInt(hd.height))
  buf.set(hexBytes(hd.prev_hash), 9)
  dv.setBigUint64(41, BigInt(hd.first_ts))
  dv.setBigUint64(49, BigInt(hd.last_ts))
  dv.setUint32(57, hd.txn_count)
  buf.set(hexBytes(hd.inputs_root), 61)
  buf.set(hexBytes(hd.effects_root), 93)
  dv.setBigUint64(125, BigInt(hd.tree_size))
  buf.set(hexBytes(hd.tree_root), 133)
  return buf
}

/** The header's hash as hex, or null where WebCrypto is missing (not a secure context). */
async function headerHash(hd) {
  if (!globalThis.crypto || !crypto.subtle) return null
  const bytes = new Uint8Array(TAG.length + HEADER_LEN)
  bytes.set(TAG, 0)
  bytes.set(encodeHeader(hd), TAG.length)
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))
  return Array.from(digest, b => b.toString(16).padStart(2, '0')).join('')
}

export async function ledgerView() {
  let first
  try {
    first = await ledger(`/ledger/blocks?limit=${PAGE}`)
  } catch (e) {
    return [h('h1', {}, 'Ledger'), errorLine(e), h('p', { class: 'muted' }, 'The ledger moves with every tenant’s writes: sign in with the root key or an admin key of the root database to see it.')]
  }
  const blocks = []
  const list = h('div', {})
  const status = h('div', { role: 'status' })
  const older = h('button', { type: 'button', class: 'quiet' }, 'Older blocks')
  const render = async () => {
    const rows = []
    for (let i = 0; i < blocks.length; i++) {
      const b = blocks[i]
      const computed = await headerHash(b.header)
      const below = blocks[i + 1]
      const linkOk = !below || below.hash === b.header.prev_hash
      const hashOk = computed === null ? null : computed === b.hash
      const verdict = hashOk === null ? 'not checked (needs a secure context)' : hashOk && linkOk ? 'verified' : hashOk ? 'prev_hash does not match the block below' : 'hash does not match the header'
      rows.push([
        String(b.height),
        h('td', { class: 'mono' }, b.header.first_ts === b.header.last_ts ? isoTs(b.header.first_ts) : `${isoTs(b.header.first_ts)} … ${isoTs(b.header.last_ts)}`),
        String(b.header.txn_count),
        h('td', { class: 'mono', title: b.hash }, b.hash.slice(0, 16) + '…'),
        h('td', { class: 'mono', title: b.header.prev_hash }, b.header.prev_hash.slice(0, 16) + '…'),
        h('td', { class: hashOk && linkOk ? 'ok' : hashOk === null ? 'muted' : 'error' }, verdict),
      ])
    }
    mount(list, table('Newest first; hashes recomputed in this browser', ['Height', 'Commit time', 'Transactions', 'Hash', 'Previous hash', 'Check'], rows))
    const lowest = blocks.length ? blocks[blocks.length - 1].height : 0
    older.disabled = lowest <= 1
    older.onclick = () =>
      guarded(status, async () => {
        const page = await ledger(`/ledger/blocks?before=${lowest}&limit=${PAGE}`)
        blocks.push(...page.blocks)
        await render()
      })
  }
  blocks.push(...first.blocks)
  await render()
  const head = first.head
  return [
    h('h1', {}, 'Ledger'),
    card('Head', head ? h('dl', {}, h('dt', {}, 'Height'), h('dd', { 'aria-label': 'Head height' }, String(head.height)), h('dt', {}, 'Hash'), h('dd', { class: 'mono' }, head.hash)) : h('p', { class: 'muted' }, 'No block yet.')),
    card('Recent blocks', list, h('div', { class: 'pager' }, older), status),
  ]
}
