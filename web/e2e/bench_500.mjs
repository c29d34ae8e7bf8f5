// Editor benchmark: time from navigation to an interactive N-node workflow, and frame time while
// panning it. The workflow must already be in the server's library (bench/bench_editor.py puts it).
//
//   node web/e2e/bench_500.mjs URL LIBRARY_NAME [--artifacts DIR] [--pan-ms 3000]
//
// Prints one JSON document: {nodes, rendered_nodes, interactive_ms, first_click_ms, frames,
// frame_ms_mean, frame_ms_p95, frame_ms_max}.

import { launch, screenshot } from "./lib.mjs";

const [url, name, ...rest] = process.argv.slice(2);
const options = { artifacts: "artifacts", "pan-ms": "3000" };
for (let i = 0; i < rest.length; i += 2) options[rest[i].replace(/^--/, "")] = rest[i + 1];
if (!url || !name) {
  console.error("usage: bench_500.mjs URL LIBRARY_NAME [--artifacts DIR] [--pan-ms MS]");
  process.exit(2);
}

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${url}/?library=${encodeURIComponent(name)}`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 60_000 });
  // ready = the loaded graph painted (two animation frames after React committed it)
  const interactive = await page.evaluate(() => performance.now());
  const nodes = await page.locator(".react-flow__node").count();

  // interactive: the first click on a node selects it
  const target = page.locator(".react-flow__node").first();
  const box = await target.boundingBox();
  const clickStart = Date.now();
  await page.mouse.click(box.x + box.width / 2, box.y + 8);
  await page.locator(".react-flow__node.selected").first().waitFor();
  const firstClick = Date.now() - clickStart;

  // pan by dragging the empty pane while requestAnimationFrame records frame deltas
  await page.evaluate(() => {
    window.__frames = [];
    let last = performance.now();
    const tick = (now) => {
      window.__frames.push(now - last);
      last = now;
      if (window.__recording) requestAnimationFrame(tick);
    };
    window.__recording = true;
    requestAnimationFrame(tick);
  });
  const panMs = Number(options["pan-ms"]);
  // start the drag on empty pane (not on a node, the minimap or the controls)
  const start = await page.evaluate(() => {
    for (let y = 120; y < 900; y += 17) {
      for (let x = 320; x < 1150; x += 23) {
        const el = document.elementFromPoint(x, y);
        if (el && el.classList.contains("react-flow__pane")) return { x, y };
      }
    }
    return null;
  });
  if (!start) throw new Error("no empty pane to drag");
  await page.mouse.move(start.x, start.y);
  await page.mouse.down();
  const began = Date.now();
  let i = 0;
  while (Date.now() - began < panMs) {
    i++;
    const t = (Date.now() - began) / panMs;
    await page.mouse.move(start.x + 300 * Math.sin(t * Math.PI), start.y + 80 * Math.sin(t * Math.PI * 2));
    await page.waitForTimeout(8);
  }
  await page.mouse.up();
  const frames = await page.evaluate(() => {
    window.__recording = false;
    return window.__frames.slice(1);
  });
  await screenshot(page, options.artifacts, `bench-editor-${nodes}`);
  const sorted = [...frames].sort((a, b) => a - b);
  const mean = frames.reduce((a, b) => a + b, 0) / Math.max(frames.length, 1);
  const workflowNodes = await page.evaluate(async (n) => {
    const r = await fetch(`/api/workflows/${encodeURIComponent(n)}`);
    return Object.keys((await r.json()).document.nodes).length;
  }, name);
  console.log(
    JSON.stringify({
      nodes: workflowNodes,
      rendered_nodes: nodes,
      interactive_ms: Math.round(interactive),
      first_click_ms: firstClick,
      pan_moves: i,
      pan_start: start,
      frames: frames.length,
      frame_ms_mean: Number(mean.toFixed(2)),
      frame_ms_p95: Number((sorted[Math.floor(sorted.length * 0.95)] ?? 0).toFixed(2)),
      frame_ms_max: Number((sorted[sorted.length - 1] ?? 0).toFixed(2)),
      page_errors: errors,
    }),
  );
} finally {
  await browser.close();
}
