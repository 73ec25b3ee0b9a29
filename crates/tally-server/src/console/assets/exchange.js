// The Animal Exchange market page (`tally demo animal-exchange`). It holds one key, which
// may only call `purchase` and `list_market`; it arrives in the address's fragment
// (never sent to a server), moves to this tab's session storage, and leaves the address.

import { h, mount, field, card, table, isoTs } from './ui.js'

const KEY = 'tally.exchange.key'
const POLL_MS = 1000
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
let market = null
let timer = null

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

async function refreshMarket() {
  market = await call('list_market', [])
  render()
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
    h('div', { class: 'grid2' }, card('Buy', field('Buyer', buyer), outcome, items), h('div', {}, card('Players', players), card('Purchase log', log)))
  )
  clearInterval(timer)
  // Polling until streams exist: the log shows other tabs' purchases within a second.
  timer = setInterval(() => refreshMarket().catch(() => {}), POLL_MS)
}

takeKeyFromFragment()
start()
