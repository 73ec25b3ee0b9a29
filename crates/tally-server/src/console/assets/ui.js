// Small DOM helpers. Everything from the database is inserted as text, never as HTML.

/** h('button', {type: 'button', onclick: f}, 'Run') → an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v)
    else if (k === 'text') el.textContent = v
    else if (k === 'hidden' || k === 'disabled' || k === 'required') el[k] = !!v
    else if (k === 'value') el.value = v
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

/** Replace an element's content. */
export function mount(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter(c => c !== undefined && c !== null && c !== false))
  return el
}

/** A labelled field: <label>Text <input></label>, so the label is the control's name. */
export function field(label, control) {
  return h('label', {}, label, control)
}

/** A section with a heading that names it (screen readers list it as a region). */
export function card(title, ...children) {
  const id = 'sec-' + title.toLowerCase().replace(/[^a-z0-9]+/g, '-') + '-' + Math.random().toString(36).slice(2, 7)
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), ...children)
}

/** A table with header cells and rows of cells (strings or nodes). */
export function table(caption, headers, rows) {
  return h(
    'table',
    {},
    h('caption', { class: 'muted' }, caption),
    h('thead', {}, h('tr', {}, headers.map(t => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows.map(r => h('tr', {}, r.map(c => (c instanceof Node && c.tagName === 'TD' ? c : h('td', {}, c))))))
  )
}

/** An error line announced to screen readers. */
export function errorLine(e) {
  return h('p', { class: 'error', role: 'alert' }, describe(e))
}

export function describe(e) {
  if (!e) return ''
  if (e.code) return `${e.code}: ${e.description}`
  return e.message || String(e)
}

/** Microseconds since the epoch (FQL ts) as an ISO time. */
export function isoTs(ts) {
  if (typeof ts !== 'number') return String(ts)
  return new Date(Math.floor(ts / 1000)).toISOString()
}

/** Run an async action from a button, showing failures in `where`. */
export async function guarded(where, fn) {
  try {
    return await fn()
  } catch (e) {
    if (where) where.replaceChildren(errorLine(e))
    else console.error(e)
    return undefined
  }
}

/** The console's address of a database (path '' = the secret's own), or of a page in it. */
export function dbHref(path, page, ...args) {
  const enc = s => encodeURIComponent(s).replace(/@/g, '%40')
  const parts = path ? path.split('/').map(enc) : []
  if (page) parts.push('@' + page, ...args.map(enc))
  return '#/db/' + parts.join('/')
}

/** The query console's address for a database. */
export function queryHref(path) {
  const enc = s => encodeURIComponent(s).replace(/@/g, '%40')
  return '#/query/' + (path ? path.split('/').map(enc).join('/') : '')
}

/** Show the current page again (after a change). */
export function refresh() {
  window.dispatchEvent(new HashChangeEvent('hashchange'))
}
