// Editor benchmark: time from navigation to an interactive N-node workflow, and frame time while
// panning it. The workflow must already be in the server's library (bench/bench_editor.py puts it).
//
//   node web/e2e/bench_500.mjs URL LIBRARY_NAME [--artifacts DIR] [--pan-ms 3000]
//
// Prints one JSON document: nodes, interactive_ms (navigation start to the graph painted),
// first_click_ms, frame_ms_* (panning the whole graph fitted in view), zoom_in_ms and
// zoomed_frame_ms_* (zoomed in to reading size, widgets drawn, panning again); for each pan, where the
// main thread's time went and how many DOM changes it made inside the nodes and links.

import { launch, screenshot } from "./lib.mjs";

const [url, name, ...rest] = process.argv.slice(2);
const options = { artifacts: "artifacts", "pan-ms": "3000" };
for (let i = 0; i < rest.length; i += 2) options[rest[i].replace(/^--/, "")] = rest[i + 1];
if (!url || !name) {
  console.error("usage: bench_500.mjs URL LIBRARY_NAME [--artifacts DIR] [--pan-ms MS]");
  process.exit(2);
}

/** Chromium's own counters (seconds of script, layout, style and all main-thread tasks so far). */
async function metrics(cdp) {
  const { metrics: list } = await cdp.send("Performance.getMetrics");
  const value = Object.fromEntries(list.map((m) => [m.name, m.value]));
  return { script: value.ScriptDuration, layout: value.LayoutDuration, style: value.RecalcStyleDuration, task: value.TaskDuration };
}

/** Drags the empty pane for `ms` while requestAnimationFrame records frame deltas; with `cdp`,
 * also where the main thread's time went (ms of script, layout, style, and the rest: paint etc). */
async function panFrames(page, ms, cdp) {
  const before = await metrics(cdp);
  await page.evaluate(() => {
    // what a pan changes inside the nodes and links (it should change nothing: only the viewport moves)
    window.__mutations = 0;
    window.__observer = new MutationObserver((records) => (window.__mutations += records.length));
    for (const layer of document.querySelectorAll(".react-flow__nodes, .react-flow__edges")) {
      window.__observer.observe(layer, { subtree: true, childList: true, attributes: true, characterData: true });
    }
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
  while (Date.now() - began < ms) {
    const t = (Date.now() - began) / ms;
    await page.mouse.move(start.x + 300 * Math.sin(t * Math.PI), start.y + 80 * Math.sin(t * Math.PI * 2));
    await page.waitForTimeout(8);
  }
  await page.mouse.up();
  const [frames, mutations] = await page.evaluate(() => {
    window.__recording = false;
    window.__observer.disconnect();
    return [window.__frames.slice(1), window.__mutations];
  });
  const after = await metrics(cdp);
  const sorted = [...frames].sort((a, b) => a - b);
  const round = (x) => Number((x ?? 0).toFixed(2));
  const spent = (key) => Math.round(1000 * (after[key] - before[key]));
  return {
    main_thread_ms: { script: spent("script"), layout: spent("layout"), style: spent("style"),
      other: spent("task") - spent("script") - spent("layout") - spent("style") },
    frames: frames.length,
    mutations,
    mean: round(frames.reduce((a, b) => a + b, 0) / Math.max(frames.length, 1)),
    p95: round(sorted[Math.floor(sorted.length * 0.95)]),
    max: round(sorted[sorted.length - 1]),
  };
}

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
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

  const panMs = Number(options["pan-ms"]);
  const far = await panFrames(page, panMs, cdp);
  await screenshot(page, options.artifacts, `bench-editor-${nodes}`);

  // zoom in to reading size (widgets drawn) over the middle, then pan again
  await page.mouse.move(800, 500);
  const zoomStart = Date.now();
  for (let step = 0; step < 40; step++) {
    const zoom = await page.evaluate(() => {
      const m = /scale\(([\d.]+)\)/.exec(document.querySelector(".react-flow__viewport").style.transform);
      return m ? Number(m[1]) : 1;
    });
    if (zoom >= 0.8) break;
    await page.mouse.wheel(0, -200);
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve())));
  }
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
  const zoomInMs = Date.now() - zoomStart;
  const zoomedNodes = await page.locator(".react-flow__node").count();
  const near = await panFrames(page, panMs, cdp);
  await screenshot(page, options.artifacts, `bench-editor-${nodes}-zoomed`);
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
      frames: far.frames,
      frame_ms_mean: far.mean,
      frame_ms_p95: far.p95,
      frame_ms_max: far.max,
      pan_main_thread_ms: far.main_thread_ms,
      pan_dom_mutations: far.mutations,
      zoom_in_ms: zoomInMs,
      zoomed_rendered_nodes: zoomedNodes,
      zoomed_frame_ms_mean: near.mean,
      zoomed_frame_ms_p95: near.p95,
      zoomed_pan_main_thread_ms: near.main_thread_ms,
      zoomed_pan_dom_mutations: near.mutations,
      page_errors: errors,
    }),
  );
} finally {
  await browser.close();
}
