'use strict'
// summary.png: one small bar panel per scenario (product bars blue, baselines grey, goal
// statuses below), drawn as SVG and rasterised by the machine's Chromium (headless, no
// network). Without Chromium the SVG is still written next to where the PNG would go.

const fs = require('node:fs')
const path = require('node:path')

const WIDTH = 1100
const COLS = 2
const PANEL_W = (WIDTH - 30) / COLS - 10
const LABEL_W = 210
const BAR_H = 18
const GAP = 6
const MAX_GOALS = 5

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const fmt = (v) => (typeof v === 'number' ? (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : String(v)) : String(v))

function panelHeight (r) {
  const c = r.chart
  let h = 34
  for (const g of c.groups) h += (c.groups.length > 1 ? 18 : 0) + g.bars.length * (BAR_H + GAP) + 4
  if (c.refLine) h += 8
  return h + 8 + Math.min(MAX_GOALS, (r.goals || []).length) * 15 + 10
}

function panel (name, r, x, y) {
  const c = r.chart
  const out = [`<g transform="translate(${x},${y})">`]
  const h = panelHeight(r)
  out.push(`<rect width="${PANEL_W}" height="${h}" rx="6" fill="#fff" stroke="#d0d7de"/>`)
  out.push(`<text x="12" y="22" font-size="14" font-weight="600">${esc(c.title)}</text>`)
  const max = Math.max(1e-9, c.refLine ? c.refLine.value : 0, ...c.groups.flatMap((g) => g.bars.map((b) => Number(b.value) || 0)))
  const barMax = PANEL_W - LABEL_W - 90
  let cy = 34
  for (const g of c.groups) {
    if (c.groups.length > 1) {
      out.push(`<text x="12" y="${cy + 13}" font-size="12" font-weight="600" fill="#444">${esc(g.label)}</text>`)
      cy += 18
    }
    for (const b of g.bars) {
      const w = Math.max(1, (Number(b.value) || 0) / max * barMax)
      out.push(`<text x="${LABEL_W - 6}" y="${cy + 13}" font-size="12" text-anchor="end" fill="#333">${esc(b.label)}</text>`)
      out.push(`<rect x="${LABEL_W}" y="${cy}" width="${w}" height="${BAR_H}" fill="${b.baseline ? '#a0aab4' : '#2b6cb0'}"/>`)
      out.push(`<text x="${LABEL_W + w + 5}" y="${cy + 13}" font-size="12" fill="#111">${esc(fmt(b.value))} ${esc(c.unit)}</text>`)
      cy += BAR_H + GAP
    }
    cy += 4
  }
  cy += 8
  if (c.refLine) {
    const rx = LABEL_W + c.refLine.value / max * barMax
    out.push(`<line x1="${rx}" y1="30" x2="${rx}" y2="${cy - 8}" stroke="#cf222e" stroke-dasharray="4 3"/>`)
    out.push(`<text x="${rx + 3}" y="${cy}" font-size="10" fill="#cf222e">${esc(c.refLine.label)}</text>`)
    cy += 8
  }
  for (const g of (r.goals || []).slice(0, MAX_GOALS)) {
    const st = g.pass === null || g.pass === undefined ? 'N/A' : g.pass ? 'PASS' : 'MISS'
    const color = st === 'PASS' ? '#1a7f37' : st === 'MISS' ? '#cf222e' : '#666'
    let line = `${g.label}: ${g.actual} (goal ${g.target})`
    if (line.length > 76) line = `${line.slice(0, 75)}…`
    out.push(`<text x="12" y="${cy + 11}" font-size="11" fill="${color}"><tspan font-weight="700">${st}</tspan> ${esc(line)}</text>`)
    cy += 15
  }
  out.push('</g>')
  return { svg: out.join('\n'), h }
}

/** Builds the SVG for all results that carry a chart. */
function buildSvg (results, { smoke } = {}) {
  const names = Object.keys(results).filter((n) => results[n].chart)
  const colY = Array(COLS).fill(78)
  const parts = []
  for (const n of names) {
    const col = colY.indexOf(Math.min(...colY))
    const p = panel(n, results[n], 15 + col * (PANEL_W + 20), colY[col])
    parts.push(p.svg)
    colY[col] += p.h + 14
  }
  const height = Math.max(...colY) + 10
  const any = names.length ? results[names[0]].env : null
  const sub = any ? `${any.machine.cores} cores, Node ${any.node}, ${any.server}${any.serverData ? `, server data on ${any.serverData}` : ''}` : ''
  const sub2 = `${any ? `commit ${any.commit}, ${any.date.slice(0, 10)}. ` : ''}Blue: dualsync; grey: baseline measured in the same run.${smoke ? ' SMOKE RUN (small sizes, indicative only).' : ''}`
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="DejaVu Sans, Arial, sans-serif">
<rect width="100%" height="100%" fill="#f6f8fa"/>
<text x="15" y="28" font-size="20" font-weight="700">dualsync benchmarks</text>
<text x="15" y="48" font-size="12" fill="#555">${esc(sub)}</text>
<text x="15" y="65" font-size="12" fill="#555">${esc(sub2)}</text>
${parts.join('\n')}
</svg>`
}

/**
 * Writes summary.svg and, when Chromium is available, summary.png.
 * @returns {Promise<string>} path of the PNG
 */
async function renderChart (results, pngPath, opts = {}) {
  const svg = buildSvg(results, opts)
  const svgPath = pngPath.replace(/\.png$/, '.svg')
  fs.mkdirSync(path.dirname(pngPath), { recursive: true })
  fs.writeFileSync(svgPath, svg)
  const exe = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
  if (!fs.existsSync(exe)) throw new Error(`no Chromium at ${exe} (set CHROMIUM_PATH); wrote ${svgPath} only`)
  const { chromium } = require('playwright-core')
  const browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox'] })
  try {
    const page = await browser.newPage({ deviceScaleFactor: 1 })
    await page.setContent(`<!doctype html><html><body style="margin:0">${svg}</body></html>`)
    await page.locator('svg').first().screenshot({ path: pngPath })
  } finally {
    await browser.close()
  }
  return pngPath
}

module.exports = { renderChart, buildSvg }
