// The Animal Exchange market page (`tally demo animal-exchange`). It holds one key, which
// may only call `purchase` and `list_market` and stream the purchase index; it arrives in
// the address's fragment (never sent to a server), moves to this tab's session storage,
// and leaves the address. The purchase log is live: a set stream (POST /stream) on
// `Match(Index("purchases_newest_first"))` says when a purchase commits, in any tab, and
// the page then calls `list_market` once; nothing is polled.

import { h, mount, field, card, table, isoTs } from './ui.js'

const KEY = 'tally.exchange.key'
// Reconnecting a stream that ended: the first wait, doubled up to the last.
const RECONNECT_MS_MIN = 500
const RECONNECT_MS_MAX = 30_000
// The purchase index, as the driver writes Match(Index("purchases_newest_first")).
const PURCHASES = { match: { index: 'purchases_newest_first' }, terms: [] }
const main = document.getElementById('market')

function takeKeyFromFragment() {
  const m = location.hash.match(/^#key=(.+)$/)
  if (!m) return
  sessionStorage.setItem(KEY, decodeURIComponent(m[1]))
  history.replaceState(null, '', location.pathname + location.search)
}

async function call(fn, args) {
  const body = { call: { function: fn }, arguments: args }
  const res = await fetch('/', {
    method: 'POST',
    headers: { authorization: `Bearer ${sessionStorage.getItem(KEY)}`, 'content-type': 'application/json', 'x-faunadb-api-version': '4' },
    body: JSON.stringify(body),
    credentials: 'omit',
  })
  const json = await res.json()
  if (json.errors && json.errors.length) throw new Error(`${json.errors[0].code}: ${json.errors[0].description}`)
  return json.resource
}

const refId = r => r['@ref'].id

/** Reads a stream's newline-delimited events, calling `onEvent` for each; resolves at the end. */
async function readEvents(res, onEvent) {
  const reader = res.body.getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffered += decoder.decode(value, { stream: true })
    let nl
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim()
      buffered = buffered.slice(nl + 1)
      if (line) onEvent(JSON.parse(line))
    }
  }
}

function keyForm(message) {
  const key = h('input', { type: 'password', autocomplete: 'off', required: true })
  const form = h('form', { class: 'stack signin', 'aria-label': 'Market key' }, h('h1', {}, 'Animal Exchange'), h('p', { class: 'muted' }, message || 'Open the address `tally demo animal-exchange` printed, or paste the market key here.'), field('Market key', key), h('div', {}, h('button', { type: 'submit' }, 'Open the market')))
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    sessionStorage.setItem(KEY, key.value.trim())
    start()
  })
  mount(main, form)
}

// The page's parts stay in place between polls, so focus and the buyer choice survive.
const buyer = h('select', {})
const players = h('div', {})
const items = h('div', {})
const log = h('div', {})
const outcome = h('div', { role: 'status', 'aria-label': 'Last purchase', 'aria-live': 'polite', class: 'result' }, h('span', { class: 'muted' }, 'Choose a buyer, then buy an animal.'))
const live = h('p', { role: 'status', 'aria-label': 'Live updates', class: 'muted' }, 'connecting the stream…')
let market = null
let streaming = false

function render() {
  const chosen = buyer.value
  mount(buyer, market.players.map(p => h('option', { value: refId(p.ref), selected: refId(p.ref) === chosen }, p.name)))
  mount(players, table('Players and their credits', ['Player', 'Credits'], market.players.map(p => [p.name, h('td', { 'aria-label': `${p.name}'s credits` }, String(p.credits))])))
  mount(
    items,
    table(
      'Every animal, who owns it, and whether it is for sale',
      ['Animal', 'Owner', 'Price', 'Status', ''],
      market.items.map(i => [
        i.label,
        h('td', { 'aria-label': `Owner of ${i.label}` }, i.owner_name),
        String(i.price),
        i.for_sale ? 'for sale' : 'not for sale',
        i.for_sale ? h('button', { type: 'button', 'aria-label': `Buy ${i.label}`, onclick: () => buy(i) }, 'Buy') : '',
      ])
    )
  )
  mount(
    log,
    market.purchases.length
      ? h('ol', { reversed: true }, market.purchases.map(p => h('li', {}, h('span', { class: 'muted mono' }, isoTs(p.ts)), ` ${p.buyer_name} bought ${p.item_label} from ${p.seller_name} for ${p.price}`)))
      : h('p', { class: 'muted' }, 'No purchase yet.')
  )
}

// One list_market call at a time; a purchase event during a call asks for one more.
let refreshing = null
let again = false
async function refreshMarket() {
  if (refreshing) {
    again = true
    return refreshing
  }
  refreshing = (async () => {
    try {
      do {
        again = false
        market = await call('list_market', [])
        render()
      } while (again)
    } finally {
      refreshing = null
    }
  })()
  return refreshing
}

/** Keeps a stream of the purchase index open for as long as the page is; refreshes on each purchase. */
async function follow() {
  if (streaming) return
  streaming = true
  let wait = RECONNECT_MS_MIN
  for (;;) {
    let why = 'the stream ended'
    try {
      const res = await fetch('/stream', {
        method: 'POST',
        headers: { authorization: `Bearer ${sessionStorage.getItem(KEY)}`, 'content-type': 'application/json', 'x-faunadb-api-version': '4' },
        body: JSON.stringify(PURCHASES),
        credentials: 'omit',
      })
      if (!res.ok) {
        const body = await res.json().catch(() => ({}))
        why = body.errors && body.errors[0] ? `${body.errors[0].code}: ${body.errors[0].description}` : `HTTP ${res.status}`
      } else {
        await readEvents(res, ev => {
          if (ev.type === 'start') {
            wait = RECONNECT_MS_MIN
            mount(live, 'live: purchases arrive through a stream')
            // Whatever committed before the stream started.
            refreshMarket().catch(() => {})
          } else if (ev.type === 'set' && ev.event.action === 'add') {
            refreshMarket().catch(() => {})
          } else if (ev.type === 'error') {
            why = `${ev.event.code}: ${ev.event.description}`
          }
        })
      }
    } catch (e) {
      why = e.message
    }
    mount(live, `reconnecting (${why})…`)
    await new Promise(r => setTimeout(r, wait))
    wait = Math.min(wait * 2, RECONNECT_MS_MAX)
  }
}

async function buy(item) {
  const who = market.players.find(p => refId(p.ref) === buyer.value)
  mount(outcome, h('span', { class: 'muted' }, `${who.name} is buying ${item.label}…`))
  try {
    const answer = await call('purchase', [item.ref, who.ref])
    const failed = String(answer).startsWith('Purchase failed')
    mount(outcome, h('strong', { class: failed ? 'error' : 'ok' }, `${who.name} → ${item.label}: ${answer}`))
  } catch (e) {
    mount(outcome, h('strong', { class: 'error' }, `${who.name} → ${item.label}: ${e.message}`))
  }
  await refreshMarket().catch(() => {})
}

async function start() {
  if (!sessionStorage.getItem(KEY)) return keyForm()
  try {
    await refreshMarket()
  } catch (e) {
    sessionStorage.removeItem(KEY)
    return keyForm(`That key was refused (${e.message}).`)
  }
  mount(
    main,
    h('div', { class: 'grid2' }, card('Buy', field('Buyer', buyer), outcome, items), h('div', {}, card('Players', players), card('Purchase log', live, log)))
  )
  follow()
}

takeKeyFromFragment()
start()
