'use strict'
// Headless Chromium for the console's end-to-end tests, driven by playwright-core with
// the system's browser (Debian's `chromium`, installed by scripts/test): no browser is
// downloaded. Screenshots go to tests/js/artifacts/ (gitignored) for people to look at.
//
// Environment:
//   CHROMIUM_PATH   the browser binary (default: the first of chromium, chromium-browser,
//                   google-chrome on PATH)
//   CI              when set, a missing browser fails the tests instead of skipping them

const fs = require('node:fs')
const path = require('node:path')

const ARTIFACTS = path.join(__dirname, '..', 'artifacts')
const CANDIDATES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']

function findChromium() {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    for (const name of CANDIDATES) {
      const p = path.join(dir, name)
      try {
        fs.accessSync(p, fs.constants.X_OK)
        return p
      } catch {}
    }
  }
  return null
}

/** Why the browser tests cannot run here, or null when they can. */
function unavailable() {
  let pw
  try {
    pw = require('playwright-core')
  } catch {
    return 'playwright-core is not installed (npm ci in tests/js)'
  }
  if (!pw || !findChromium()) return 'no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)'
  return null
}

/** `{skip}` options for node:test: skipped with the reason outside CI, never in CI. */
function skipUnlessBrowser() {
  const why = unavailable()
  if (why && process.env.CI) throw new Error(`browser tests cannot run in CI: ${why}`)
  return why ? { skip: why } : {}
}

async function launch() {
  const { chromium } = require('playwright-core')
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  const browser = await chromium.launch({
    executablePath: findChromium(),
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  })
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } })
  context.setDefaultTimeout(15_000)
  return { browser, context }
}

/** Save a full-page screenshot as artifacts/<name>.png; returns its path. */
async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  const file = path.join(ARTIFACTS, `${name}.png`)
  await page.screenshot({ path: file, fullPage: true })
  return file
}

/** Collect the page's console errors and uncaught exceptions, to assert none happened. */
function watchErrors(page) {
  const errors = []
  page.on('pageerror', e => errors.push(`pageerror: ${e.message}`))
  page.on('console', m => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`)
  })
  return errors
}

module.exports = { skipUnlessBrowser, launch, screenshot, watchErrors, findChromium, ARTIFACTS }
