// Shared helpers of the end-to-end scripts: Debian's Chromium driven by playwright-core.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.DIFFGRAPH_CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}

/** A page on the editor that collects console errors and failed requests for the report. */
export async function openEditor(browser, url, { width = 1600, height = 1000 } = {}) {
  const page = await browser.newPage({ viewport: { width, height } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  return { page, problems };
}

export async function screenshot(page, artifacts, name) {
  mkdirSync(artifacts, { recursive: true });
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

/** Drag with the mouse from the centre of one element to the centre of another. */
export async function dragBetween(page, from, to) {
  const a = await from.boundingBox();
  const b = await to.boundingBox();
  if (!a || !b) throw new Error("drag: an element is not visible");
  await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
  await page.mouse.down();
  const steps = 12;
  for (let i = 1; i <= steps; i++) {
    await page.mouse.move(a.x + a.width / 2 + ((b.x - a.x + (b.width - a.width) / 2) * i) / steps,
      a.y + a.height / 2 + ((b.y - a.y + (b.height - a.height) / 2) * i) / steps);
  }
  await page.mouse.up();
}

export function handle(page, nodeId, name, kind) {
  return page.locator(`[data-testid="node-${nodeId}"] .react-flow__handle.${kind}[data-handleid="${name}"]`);
}

export class Check {
  constructor() {
    this.failures = [];
  }
  ok(condition, what) {
    console.log(`${condition ? "ok" : "FAIL"}: ${what}`);
    if (!condition) this.failures.push(what);
  }
}
