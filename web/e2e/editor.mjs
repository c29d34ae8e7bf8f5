// End-to-end scenarios of the editor against a real `diffgraph serve`.
//
//   node web/e2e/editor.mjs URL SCENARIO [--artifacts DIR] [--file WORKFLOW] [--set name=value]...
//
// Scenarios: palette, incompatible, broken, txt2img, library (--image PNG --out YAML), newuser (--image PNG), comfy,
// widgets (--image PNG), compile (--set ...), controlnet (--image PNG --set ...). Prints one "ok:"/"FAIL:" line per check,
// saves a screenshot of the end state under --artifacts, and exits 1 when any check failed.

import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Check, dragBetween, handle, launch, openEditor, screenshot } from "./lib.mjs";

const [url, scenario, ...rest] = process.argv.slice(2);
const options = { artifacts: "artifacts", file: null, image: null, out: null, set: [] };
for (let i = 0; i < rest.length; i += 2) {
  const key = rest[i].replace(/^--/, "");
  if (key === "set") options.set.push(rest[i + 1]);
  else options[key] = rest[i + 1];
}
if (!url || !scenario) {
  console.error("usage: editor.mjs URL SCENARIO [--artifacts DIR] [--file WORKFLOW] [--set name=value]");
  process.exit(2);
}

const check = new Check();
const node = (page, id) => page.locator(`[data-testid="node-${id}"]`);

async function openFile(page, path) {
  await page.locator('[data-testid="open-file"]').setInputFiles(path);
  // the landing graph may share node ids with the file: wait until the file is the one shown
  await page.getByTestId("banner").filter({ hasText: `Opened ${path.split("/").pop()}` }).waitFor();
}

/** Drops a file from disk onto the canvas, as dragging it from a file manager does. */
async function dropFile(page, path, type) {
  const base64 = readFileSync(path).toString("base64");
  const name = path.split("/").pop();
  await page.evaluate(
    ({ base64, name, type }) => {
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], name, { type }));
      const target = document.querySelector(".react-flow__pane");
      for (const kind of ["dragenter", "dragover", "drop"]) {
        target.dispatchEvent(new DragEvent(kind, { bubbles: true, cancelable: true, dataTransfer: transfer, clientX: 700, clientY: 400 }));
      }
    },
    { base64, name, type },
  );
}

async function newWorkflow(page) {
  await page.getByRole("button", { name: "New" }).click();
  await page.waitForFunction(() => document.querySelectorAll(".react-flow__node").length === 0);
}

async function palette(page) {
  await newWorkflow(page);
  const entry = '[data-testid^="palette-"]:not([data-testid="palette-search"])';
  const all = await page.locator(entry).count();
  await page.getByTestId("palette-search").fill("seed");
  const entries = await page.locator(entry).allTextContents();
  check.ok(
    entries.includes("Seed") && !entries.includes("LoadImage") && entries.length < all,
    `search "seed" narrows the palette to matching names and docs (${entries.join(", ")} of ${all})`,
  );
  await page.getByTestId("palette-Seed").click();
  await node(page, "seed").waitFor();
  check.ok(await node(page, "seed").isVisible(), "clicking a palette entry adds the node");
  // every template is also offered as a node that runs it as a subgraph
  await page.getByTestId("palette-search").fill("workflow:");
  const subgraphs = await page.locator(entry).allTextContents();
  check.ok(subgraphs.includes("workflow:txt2img"), `templates are offered as subgraph nodes (${subgraphs.join(", ")})`);
  await page.getByTestId("palette-search").fill("");
  await page.getByTestId("palette-SaveImage").click();
  await node(page, "saveimage").waitFor();
  check.ok((await page.locator(".react-flow__node").count()) === 2, "two nodes on the canvas");

  await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("Control+z");
  await node(page, "saveimage").waitFor({ state: "detached" });
  check.ok((await page.locator(".react-flow__node").count()) === 1, "Ctrl+Z removes the last added node");
  await page.keyboard.press("Control+Shift+z");
  await node(page, "saveimage").waitFor();
  check.ok((await page.locator(".react-flow__node").count()) === 2, "Ctrl+Shift+Z brings it back");

  // edit a param, undo restores the old value
  const value = node(page, "seed").locator('input[data-param="value"]');
  await value.fill("1234");
  await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("Control+z");
  await page.waitForFunction(() => document.querySelector('[data-testid="node-seed"] input[data-param="value"]')?.value === "0");
  check.ok((await value.inputValue()) === "0", "undo restores a param's previous value");

  // copy/paste, then delete
  await node(page, "seed").locator(".dg-node-header").click();
  await page.keyboard.press("Control+c");
  await page.keyboard.press("Control+v");
  await node(page, "seed_2").waitFor();
  check.ok(await node(page, "seed_2").isVisible(), "copy/paste duplicates the node under a fresh id");
  await page.keyboard.press("Delete");
  await node(page, "seed_2").waitFor({ state: "detached" });
  check.ok((await page.locator(".react-flow__node").count()) === 2, "Delete removes the selected node");

  // multi-select with Ctrl+click, then copy/paste both and undo the paste in one step
  await node(page, "seed").locator(".dg-node-header").click();
  await node(page, "saveimage").locator(".dg-node-header").click({ modifiers: ["Control"] });
  check.ok((await page.locator(".react-flow__node.selected").count()) === 2, "Ctrl+click selects a second node");
  await page.keyboard.press("Control+c");
  await page.keyboard.press("Control+v");
  await node(page, "saveimage_2").waitFor();
  check.ok((await page.locator(".react-flow__node").count()) === 4, "pasting a multi-selection adds both nodes");
  await page.keyboard.press("Control+z");
  await node(page, "saveimage_2").waitFor({ state: "detached" });
  check.ok((await page.locator(".react-flow__node").count()) === 2, "one undo removes the whole paste");

  // double-click an id to rename the node; a bad id is explained and not applied
  await node(page, "seed").locator(".dg-node-id").dblclick();
  await page.getByRole("textbox", { name: "node id" }).fill("a.b");
  await page.getByRole("textbox", { name: "node id" }).press("Enter");
  check.ok((await node(page, "seed").locator(".node-error").textContent()).includes("'.'"), "an id with a dot is refused, in words");
  await page.getByRole("textbox", { name: "node id" }).fill("my_seed");
  await page.getByRole("textbox", { name: "node id" }).press("Enter");
  await node(page, "my_seed").waitFor();
  check.ok((await node(page, "seed").count()) === 0, "renaming a node changes its id");

  // the palette documents each node
  await page.getByRole("button", { name: "about SaveImage" }).click();
  check.ok((await page.locator(".palette-doc").textContent()).includes("images (IMAGE)"), "palette shows a node's docs and ports");
  const before = await page.locator(".react-flow__node").evaluateAll((els) => els.map((el) => el.style.transform).join("|"));
  await page.getByRole("button", { name: "Auto-layout" }).click();
  await page.waitForFunction(
    (old) => [...document.querySelectorAll(".react-flow__node")].map((el) => el.style.transform).join("|") !== old,
    before,
  );
  const boxes = await page.locator(".react-flow__node").evaluateAll((els) => els.map((el) => el.getBoundingClientRect().toJSON()));
  const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  check.ok(!overlap(boxes[0], boxes[1]), "auto-layout leaves no two nodes overlapping");
  check.ok(await page.locator(".react-flow__minimap").isVisible(), "the minimap is shown");
}

async function incompatible(page) {
  await openFile(page, options.file);
  await node(page, "save").waitFor();
  const edges = () => page.locator(".react-flow__edge").count();
  const before = await edges();
  await dragBetween(page, handle(page, "seed", "seed", "source"), handle(page, "save", "images", "target"));
  // the refusal's message is the sign the drop was handled; only then is "no new edge" meaningful
  await page.getByTestId("banner").filter({ hasText: "Link refused" }).waitFor({ timeout: 5000 });
  check.ok((await edges()) === before, "INT seed -> IMAGE images is refused while dragging");
  const banner = (await page.getByTestId("banner").textContent()) ?? "";
  check.ok(/refused/i.test(banner) && banner.includes("INT") && banner.includes("IMAGE"), `the refusal is explained: "${banner}"`);
  await screenshot(page, options.artifacts, "e2e-incompatible-refused");
  await dragBetween(page, handle(page, "seed", "seed", "source"), handle(page, "scale", "value", "target"));
  await page.locator(".react-flow__edge").first().waitFor({ timeout: 5000 }).catch(() => {});
  check.ok((await edges()) === before + 1, "INT seed -> FLOAT param is accepted (INT feeds FLOAT)");
  check.ok((await node(page, "scale").locator(".linked").count()) === 1, "a param fed by a link shows as linked");
  await node(page, "seed").locator(".dg-node-id").dblclick();
  await page.getByRole("textbox", { name: "node id" }).fill("renamed");
  await page.getByRole("textbox", { name: "node id" }).press("Enter");
  await node(page, "renamed").waitFor();
  const followed = await page
    .waitForFunction(
      (count) =>
        document.querySelectorAll(".react-flow__edge").length === count &&
        document.querySelectorAll('[data-testid="node-scale"] .linked').length === 1,
      before + 1,
      { timeout: 5000 },
    )
    .then(() => true, () => false);
  check.ok(followed, "links follow a renamed node");
}

async function broken(page) {
  await openFile(page, options.file);
  // validation runs without pressing Run; errors land on the nodes they name
  await page.locator('[data-testid="node-seed"].has-issues').waitFor({ timeout: 15_000 });
  const seedText = await node(page, "seed").textContent();
  check.ok(/value/.test(seedText) && /greater than or equal/i.test(seedText), `out-of-range param reported on node seed: ${seedText}`);
  await page.locator('[data-testid="node-save"].has-issues').waitFor();
  const saveText = await node(page, "save").textContent();
  check.ok(/missing node 'nowhere'/.test(saveText), `link to a missing node reported on node save: ${saveText}`);
  await page.locator('[data-testid="node-mystery"].has-issues').waitFor();
  const mysteryText = await node(page, "mystery").textContent();
  check.ok(/unknown node type/i.test(mysteryText), `unknown type reported on node mystery: ${mysteryText}`);
  await page.getByTestId("run").click();
  const refused = page.getByTestId("banner").filter({ hasText: "invalid workflow" });
  await refused.waitFor();
  const words = (await refused.textContent()) ?? "";
  check.ok(
    /seed\.value/.test(words) && !/POST|\/api\/|\(400\)/.test(words),
    `Run of a broken workflow is refused with the server's words, without HTTP detail: "${words}"`,
  );
  check.ok((await node(page, "seed").getAttribute("data-state")) === "idle", "nothing ran");
}

async function setTemplateParam(page, name, value) {
  const field = page.getByTestId(`template-param-${name}`).locator("textarea, input, select").first();
  if ((await field.count()) === 0) return false;
  const tag = await field.evaluate((el) => el.tagName);
  if (tag === "SELECT") await field.selectOption(value);
  else await field.fill(value);
  return true;
}

/** Opens a template, sets its params from --set and its prompt (by default one no cache holds yet);
 * true when the prompt was editable. */
async function openTemplate(page, name, prompt = `${name} in the browser ${Date.now()}`) {
  await page.getByTestId("tab-templates").click();
  await page.getByTestId(`template-${name}`).click();
  await page.locator('[data-node-type="SaveImage"]').first().waitFor();
  await page.getByTestId("tab-params").click();
  for (const pair of options.set) {
    const [param, ...value] = pair.split("=");
    check.ok(await setTemplateParam(page, param, value.join("=")), `template param ${param} is editable`);
  }
  return setTemplateParam(page, "prompt", prompt);
}

/** The models a model input inside `scope` offers, once the list of its kind has arrived (it is
 * asked for when the first input of that kind shows). */
async function modelChoices(scope) {
  const choices = scope.locator("datalist option");
  await choices.first().waitFor({ state: "attached", timeout: 10_000 }).catch(() => {});
  return choices.evaluateAll((els) => els.map((el) => el.value));
}

async function waitForRunEnd(page) {
  await page.getByTestId("run").filter({ hasText: /^Run$/ }).waitFor({ timeout: 240_000 });
}

async function txt2img(page) {
  // unique per run, so the server's cache cannot already hold this picture
  const stamp = `${Date.now()}`;
  check.ok(await openTemplate(page, "txt2img", `a tiny blue square, edited in the browser ${stamp}`), "the prompt is editable");
  const save = page.locator('[data-node-type="SaveImage"]').first();
  const saveId = (await save.getAttribute("data-testid")).replace(/^node-/, "");
  await page.keyboard.press("Control+Enter");
  await save.locator('[data-testid="node-images"] img').first().waitFor({ timeout: 240_000 });
  await waitForRunEnd(page);
  const loaded = await save.locator('[data-testid="node-images"] img').first().evaluate(
    (img) => img.complete && img.naturalWidth > 0,
  );
  check.ok(loaded, "the SaveImage node shows the image it wrote");
  // the loader shows its model's family, as validation told it from the model's own files
  const family = await node(page, "load").getByTestId("node-family").textContent({ timeout: 10_000 }).catch(() => null);
  check.ok(family === "sd", `the loader shows its model family (${family})`);
  check.ok((await save.getAttribute("data-state")) === "done", "SaveImage is marked done");
  await screenshot(page, options.artifacts, "e2e-txt2img-first-run");

  // the image carries its workflow: reopening it gives the same graph
  const src = await save.locator('[data-testid="node-images"] img').first().getAttribute("src");
  const bytes = await page.evaluate(async (u) => Array.from(new Uint8Array(await (await fetch(u)).arrayBuffer())), src);
  const pngPath = join(tmpdir(), `diffgraph-e2e-${process.pid}.png`);
  writeFileSync(pngPath, Buffer.from(bytes));

  // change only the prefix: everything upstream comes from the cache
  await save.locator('input[data-param="prefix"]').fill(`edited_${stamp}`);
  await page.getByTestId("run").click();
  await page.getByTestId("run").filter({ hasText: "Running" }).waitFor({ timeout: 10_000 }).catch(() => {});
  await waitForRunEnd(page);
  await save.locator(`[data-testid="node-images"] img[src*="edited_${stamp}"]`).first().waitFor({ timeout: 30_000 });
  const states = await page.locator(".react-flow__node [data-testid^='node-'][data-state]").evaluateAll((els) =>
    els.map((el) => [el.getAttribute("data-testid").slice(5), el.getAttribute("data-state")]),
  );
  const others = states.filter(([id]) => id !== saveId);
  check.ok(others.length > 0 && others.every(([, s]) => s === "cached"), `every other node is cached: ${JSON.stringify(states)}`);
  check.ok(states.find(([id]) => id === saveId)?.[1] === "done", "SaveImage ran again");
  await screenshot(page, options.artifacts, "e2e-txt2img-cached-rerun");

  // the history lists both runs
  await page.getByTestId("tab-history").click();
  await page.locator(".history-entry").nth(1).waitFor();
  check.ok((await page.locator(".history-entry.status-succeeded").count()) >= 2, "history lists both runs");
  // reopening the first run brings back its workflow (old prefix) and its image
  await page.getByRole("button", { name: "New" }).click();
  await page.waitForFunction(() => document.querySelectorAll(".react-flow__node").length === 0);
  await page.locator(".history-entry").nth(1).click();
  await save.locator('[data-testid="node-images"] img').first().waitFor({ timeout: 30_000 });
  check.ok(
    (await save.locator('input[data-param="prefix"]').inputValue()) === "txt2img" &&
      (await save.locator('[data-testid="node-images"] img').first().getAttribute("src")) === src,
    "reopening a past run from the history restores its workflow and its image",
  );

  // dropping the PNG reopens the workflow that made it
  await page.getByRole("button", { name: "New" }).click();
  await page.waitForFunction(() => document.querySelectorAll(".react-flow__node").length === 0);
  await dropFile(page, pngPath, "image/png");
  await save.waitFor();
  check.ok((await page.locator(".react-flow__node").count()) === states.length, "dropping the PNG on the canvas restores its workflow");
  await page.getByTestId("tab-params").click();
  check.ok(
    (await page.getByTestId("template-param-prompt").locator("textarea").inputValue()).includes("edited in the browser"),
    "the PNG's params come back as the workflow's defaults",
  );
  check.ok(readFileSync(pngPath).length > 0, "the PNG was saved for the check");

  // a long run shows step i/n and live previews on the sampler, and Cancel stops it
  await setTemplateParam(page, "steps", "1000");
  await setTemplateParam(page, "prompt", `a long run ${stamp}`);
  await page.getByTestId("run").click();
  const sampler = page.locator('[data-node-type="SampleLoop"]').first();
  const progress = await sampler
    .locator('[data-testid="node-state"]', { hasText: /running \d+\/1000/ })
    .waitFor({ timeout: 120_000 })
    .then(() => true, () => false);
  check.ok(progress, "the sampler shows running i/1000");
  const previewed = await sampler.locator("img.preview").waitFor({ timeout: 30_000 }).then(() => true, () => false);
  check.ok(previewed, "the sampler shows a live preview");
  await screenshot(page, options.artifacts, "e2e-txt2img-running");
  await page.getByTestId("cancel").click();
  await page.getByTestId("banner").filter({ hasText: "Run cancelled" }).waitFor({ timeout: 60_000 });
  check.ok((await sampler.getAttribute("data-state")) === "cancelled", "Cancel stops the run before the sampler is done, and says so on it");
  check.ok((await sampler.locator("img.preview").count()) === 1, "the interrupted sampler keeps its last preview");
  const kept = await page.locator('[data-node-type="LoadPipeline"]').first().getAttribute("data-state");
  check.ok(kept === "cached" || kept === "done", `nodes that finished keep their badge after Cancel (${kept})`);
  await screenshot(page, options.artifacts, "e2e-txt2img-cancelled");
}

async function library(page) {
  await newWorkflow(page);
  // LoadImage with an uploaded picture feeding SaveImage
  await page.getByTestId("palette-LoadImage").click();
  await node(page, "loadimage").waitFor();
  await node(page, "loadimage").locator('.upload-widget input[type="file"]').setInputFiles(options.image);
  await node(page, "loadimage").locator("img.thumbnail").waitFor();
  const path = await node(page, "loadimage").locator('.upload-widget input[type="text"]').inputValue();
  check.ok(/^[0-9a-f]{32}\.png$/.test(path), `the upload sets LoadImage's image to the uploaded file's name, no server path (${path})`);
  // paint a mask over the middle: the picture is uploaded again with that area transparent
  await node(page, "loadimage").getByRole("button", { name: "Paint mask…" }).click();
  const canvas = page.getByTestId("mask-canvas");
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width * 0.4, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.getByRole("button", { name: "Save mask" }).click();
  await page.getByRole("dialog").waitFor({ state: "detached" });
  await page.waitForFunction((old) => document.querySelector('[data-testid="node-loadimage"] .upload-widget input[type="text"]').value !== old, path);
  const alpha = await node(page, "loadimage").locator("img.thumbnail").evaluate(async (img) => {
    await img.decode();
    const c = document.createElement("canvas");
    [c.width, c.height] = [img.naturalWidth, img.naturalHeight];
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    return [g.getImageData(c.width / 2, c.height / 2, 1, 1).data[3], g.getImageData(1, 1, 1, 1).data[3]];
  });
  check.ok(alpha[0] === 0 && alpha[1] === 255, `the painted area is transparent, the rest opaque (alpha ${alpha})`);

  await page.getByTestId("palette-SaveImage").click();
  await node(page, "saveimage").waitFor();
  await dragBetween(page, handle(page, "loadimage", "image", "source"), handle(page, "saveimage", "images", "target"));
  await page.locator(".react-flow__edge").first().waitFor({ timeout: 5000 });
  check.ok((await page.locator(".react-flow__edge").count()) === 1, "IMAGE -> IMAGE link is accepted");
  await page.getByRole("textbox", { name: "workflow name" }).fill("e2e-library");

  // download as YAML: the test hands the file to `diffgraph run`
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Save YAML" }).click()]);
  await download.saveAs(options.out);
  check.ok(download.suggestedFilename() === "e2e-library.yaml", `downloaded ${download.suggestedFilename()}`);

  // the server's library keeps it
  await page.getByTestId("tab-library").click();
  await page.getByTestId("library-name").fill("e2e-library");
  await page.getByTestId("library-save").click();
  await page.getByTestId("banner").filter({ hasText: "Saved" }).waitFor();
  await page.getByRole("button", { name: "New" }).click();
  await page.waitForFunction(() => document.querySelectorAll(".react-flow__node").length === 0);
  await page.locator(".library-entry button", { hasText: "e2e-library" }).click();
  await node(page, "saveimage").waitFor();
  check.ok((await page.locator(".react-flow__edge").count()) === 1, "reopening from the library restores nodes and links");

  // and it runs from the editor
  await page.keyboard.press("Control+Enter");
  await node(page, "saveimage").locator('[data-testid="node-images"] img').first().waitFor({ timeout: 120_000 });
  check.ok((await node(page, "saveimage").getAttribute("data-state")) === "done", "Ctrl+Enter runs it and SaveImage shows the picture");

  // a file outside the server's uploads is refused before anything runs, on the node, in words
  await node(page, "loadimage").locator('.upload-widget input[type="text"]').fill("/nonexistent/picture.png");
  await page.getByTestId("run").click();
  const refusal = node(page, "loadimage").locator(".field-error").filter({ hasText: "POST /api/uploads" });
  await refusal.waitFor({ timeout: 60_000 });
  const failure = await refusal.textContent();
  check.ok(/picture\.png/.test(failure) && /uploaded file/.test(failure), `the refused node says why: ${failure}`);
  await page.getByTestId("banner").filter({ hasText: "invalid workflow" }).waitFor();
  await screenshot(page, options.artifacts, "e2e-library-failed-run");
}


const box = (locator) => locator.evaluate((el) => el.getBoundingClientRect().toJSON());
const inside = (a, b) => a.left >= b.left && a.right <= b.right && a.top >= b.top && a.bottom <= b.bottom;
const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

/** What a new user meets first: the landing graph, the palette, messages, reloads, pictures. */
async function newuser(page) {
  // the landing page opens the txt2img template, as ComfyUI opens its default graph
  await page.locator('[data-node-type="SaveImage"]').first().waitFor();
  const landing = await page.locator('[data-node-type]').evaluateAll((els) => els.map((el) => el.getAttribute("data-node-type")));
  check.ok(landing.includes("LoadPipeline") && landing.includes("SampleLoop"), `the landing page shows txt2img (${landing.join(", ")})`);
  const icon = await page.evaluate(async () => {
    const r = await fetch("/favicon.ico");
    return [r.status, r.headers.get("content-type")];
  });
  check.ok(icon[0] === 200 && icon[1].startsWith("image/"), `the favicon is served (${icon.join(" ")})`);
  await screenshot(page, options.artifacts, "e2e-newuser-landing");

  // a palette click puts the node in view, on no other node
  await page.getByTestId("palette-PreviewImage").click();
  const added = node(page, "previewimage");
  await added.waitFor();
  const canvas = await box(page.locator(".canvas"));
  const placed = await box(page.locator('.react-flow__node[data-id="previewimage"]'));
  check.ok(inside(placed, canvas), `a palette click places the node inside the visible canvas (${JSON.stringify(placed)})`);
  const others = await page.locator('.react-flow__node:not([data-id="previewimage"])').evaluateAll((els) => els.map((el) => el.getBoundingClientRect().toJSON()));
  check.ok(others.every((o) => !overlaps(o, placed)), "the new node covers no other node");
  await screenshot(page, options.artifacts, "e2e-newuser-palette-in-view");

  // notifications lie over the canvas: showing one moves nothing
  const tabBefore = await box(page.getByTestId("tab-nodes"));
  const canvasBefore = await box(page.locator(".react-flow__pane"));
  await page.locator('.react-flow__node[data-id="previewimage"] .dg-node-header').click();
  await page.keyboard.press("Control+c");
  await page.getByTestId("banner").filter({ hasText: "Copied" }).waitFor();
  const tabAfter = await box(page.getByTestId("tab-nodes"));
  const canvasAfter = await box(page.locator(".react-flow__pane"));
  check.ok(tabBefore.top === tabAfter.top && canvasBefore.top === canvasAfter.top, "a notification does not push the page down");
  await screenshot(page, options.artifacts, "e2e-newuser-notification-overlay");

  // the working graph survives a reload, and the page warns before leaving unsaved work
  await page.getByRole("textbox", { name: "workflow name" }).fill("kept-across-reloads");
  await page.waitForFunction(() => JSON.parse(localStorage.getItem("diffgraph:working-graph") ?? "{}").document?.name === "kept-across-reloads");
  check.ok((await page.evaluate(() => document.body.dataset.unsaved)) === "true", "an edited template counts as unsaved work");
  const count = await page.locator(".react-flow__node").count();
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  await node(page, "previewimage").waitFor();
  check.ok(
    (await page.getByRole("textbox", { name: "workflow name" }).inputValue()) === "kept-across-reloads" &&
      (await page.locator(".react-flow__node").count()) === count,
    "after a reload the working graph is back, name and nodes",
  );

  // the inpaint template: image params get upload, preview and the painter that sets the mask
  await page.getByTestId("tab-templates").click();
  await page.getByTestId("template-inpaint").click();
  await page.locator('[data-node-type="Mask"]').first().waitFor();
  await page.getByTestId("tab-params").click();
  await page.getByTestId("upload-input-image").setInputFiles(options.image);
  await page.getByTestId("preview-image").waitFor();
  const imageValue = await page.getByRole("textbox", { name: "image", exact: true }).inputValue();
  check.ok(/\.png$/.test(imageValue), `uploading sets the template's image param (${imageValue})`);
  await page.getByTestId("paint-mask").click();
  const maskCanvas = page.getByTestId("mask-canvas");
  const m = await maskCanvas.boundingBox();
  await page.mouse.move(m.x + m.width * 0.4, m.y + m.height / 2);
  await page.mouse.down();
  await page.mouse.move(m.x + m.width * 0.6, m.y + m.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.getByRole("button", { name: "Save mask" }).click();
  await page.getByTestId("preview-mask").waitFor();
  const maskValue = await page.getByRole("textbox", { name: "mask", exact: true }).inputValue();
  check.ok(/\.png$/.test(maskValue) && maskValue !== imageValue, `the painter sets the template's mask param (${maskValue})`);
  const pixels = await page.getByTestId("preview-mask").evaluate(async (img) => {
    await img.decode();
    const c = document.createElement("canvas");
    [c.width, c.height] = [img.naturalWidth, img.naturalHeight];
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    return [g.getImageData(c.width / 2, c.height / 2, 1, 1).data[0], g.getImageData(1, 1, 1, 1).data[0]];
  });
  check.ok(pixels[0] === 255 && pixels[1] === 0, `the mask is white where painted, black elsewhere (${pixels})`);
  await screenshot(page, options.artifacts, "e2e-newuser-inpaint-params");

  // a plain picture dropped on the canvas becomes a LoadImage node holding the upload
  await newWorkflow(page);
  await dropFile(page, options.image, "image/png");
  await node(page, "loadimage").waitFor();
  const dropped = await node(page, "loadimage").locator('input[data-param="image"]').inputValue();
  check.ok(/\.png$/.test(dropped), `dropping a plain PNG gives LoadImage with it uploaded (${dropped})`);
  check.ok((await page.getByTestId("banner").textContent()).includes("LoadImage"), "the drop says what it did");
  check.ok((await node(page, "loadimage").locator("img.thumbnail").count()) === 1, "the LoadImage node previews the picture");
  await screenshot(page, options.artifacts, "e2e-newuser-dropped-image");

  // a run's history entry shows the user's local time, not a raw UTC string
  await page.getByTestId("tab-nodes").click();
  await page.getByTestId("palette-PreviewImage").click();
  await node(page, "previewimage").waitFor();
  await dragBetween(page, handle(page, "loadimage", "image", "source"), handle(page, "previewimage", "images", "target"));
  await page.locator(".react-flow__edge").first().waitFor();
  await page.getByTestId("run").click();
  await page.getByTestId("banner").filter({ hasText: "Run finished" }).waitFor({ timeout: 60_000 });
  const time = await node(page, "previewimage").getByTestId("node-time").textContent();
  check.ok(/^\d+\.\d+ s$/.test(time), `each node shows the time it took (${time})`);
  await page.getByTestId("tab-history").click();
  const shown = page.getByTestId("run-time").first();
  await shown.waitFor();
  const [text, iso] = [await shown.textContent(), await shown.getAttribute("title")];
  const expected = await page.evaluate((t) => new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }), iso);
  check.ok(text === expected && !/T\d\d:/.test(text), `history shows local time "${text}" for ${iso}`);
  await screenshot(page, options.artifacts, "e2e-newuser-history-local-time");

  // the gallery shows the run's images; a click opens the full-size viewer
  await page.getByTestId("tab-gallery").click();
  await page.locator('[data-testid="gallery"] img').first().waitFor();
  await page.locator('[data-testid="gallery"] img').first().click();
  const full = page.getByTestId("viewer-image");
  await full.waitFor();
  const size = await full.evaluate(async (img) => {
    await img.decode();
    return [img.naturalWidth, img.naturalHeight];
  });
  check.ok(size[0] === 64 && size[1] === 48, `the viewer shows the run's picture at full size (${size})`);
  await screenshot(page, options.artifacts, "e2e-newuser-gallery-viewer");
  await page.keyboard.press("Escape");
  await page.getByTestId("viewer").waitFor({ state: "detached" });

  // leaving with unsaved work asks first (the page cancels beforeunload); after saving it does not
  const leaving = () =>
    page.evaluate(() => {
      const event = new Event("beforeunload", { cancelable: true });
      window.dispatchEvent(event);
      return event.defaultPrevented;
    });
  check.ok(await leaving(), "leaving with unsaved work asks first");
  await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Save YAML" }).click()]);
  await page.waitForFunction(() => document.body.dataset.unsaved === "false");
  check.ok(!(await leaving()), "after Save YAML, leaving does not ask");
}

/** What a ComfyUI user reaches for next: search, link drop, collapse, queue x N, models, help. */
async function comfy(page) {
  await newWorkflow(page);
  // double-click the canvas: a search box adds the chosen node there
  const pane = await box(page.locator(".react-flow__pane"));
  await page.mouse.dblclick(pane.left + 300, pane.top + 200);
  await page.getByTestId("node-search").waitFor();
  await page.keyboard.type("seed");
  await page.keyboard.press("Enter");
  await node(page, "seed").waitFor();
  const seedBox = await box(page.locator('.react-flow__node[data-id="seed"]'));
  check.ok(Math.abs(seedBox.left - (pane.left + 300)) < 5 && Math.abs(seedBox.top - (pane.top + 200)) < 5, `double-click search adds the node where clicked (${seedBox.left - pane.left},${seedBox.top - pane.top})`);

  // a link dropped on empty canvas offers only nodes that take it, and wires the chosen one
  const from = await handle(page, "seed", "seed", "source").boundingBox();
  await page.mouse.move(from.x + from.width / 2, from.y + from.height / 2);
  await page.mouse.down();
  await page.mouse.move(from.x + 350, from.y + 40, { steps: 10 });
  await page.mouse.up();
  await page.getByTestId("node-search").waitFor();
  const offered = await page.locator('[data-testid^="search-"]').allTextContents();
  check.ok(offered.some((o) => o.startsWith("Float")) && !offered.some((o) => o.startsWith("SaveImage")), `only nodes taking INT are offered (${offered.join(", ")})`);
  await page.keyboard.type("Float");
  await page.keyboard.press("Enter");
  await node(page, "float").waitFor();
  await page.locator(".react-flow__edge").first().waitFor();
  check.ok((await node(page, "float").locator(".linked").count()) === 1, "the new node is wired to the dropped link");
  await screenshot(page, options.artifacts, "e2e-comfy-link-drop-search");

  // collapse hides a node's widgets and is saved with the workflow
  await node(page, "seed").getByTestId("collapse").click();
  await page.locator('[data-testid="node-seed"].is-collapsed').waitFor();
  check.ok((await node(page, "seed").locator('input[data-param="value"]').count()) === 0, "a collapsed node hides its widgets");
  await node(page, "seed").getByTestId("collapse").click();
  await node(page, "seed").locator('input[data-param="value"]').waitFor();

  // queue x 3 with the seed incremented after each run
  await node(page, "seed").locator('input[data-param="value"]').fill("5");
  await page.getByTestId("tab-history").click();
  await page.locator('[data-testid="history"], .tab-body p.muted:text("No runs yet.")').first().waitFor();
  const before = await page.locator(".history-entry.status-succeeded").count();
  await page.getByTestId("seed-control").selectOption("increment");
  await page.getByTestId("queue-count").fill("3");
  await page.getByTestId("run").click();
  const ranThree = await page
    .waitForFunction((n) => document.querySelectorAll(".history-entry.status-succeeded").length >= n, before + 3, { timeout: 60_000 })
    .then(() => true, () => false);
  check.ok(ranThree, "Run with x3 queues three runs");
  await page.getByTestId("run").filter({ hasText: /^Run$/ }).waitFor();
  const seedAfter = await node(page, "seed").locator('input[data-param="value"]').inputValue();
  check.ok(seedAfter === "8", `the seed went up by one after each of the three runs (5 -> ${seedAfter})`);
  const seeds = await page.evaluate(async () => {
    const runs = (await (await fetch("/api/runs?limit=3")).json());
    const list = Array.isArray(runs) ? runs : runs.runs;
    return Promise.all(list.map(async (r) => (await (await fetch(`/api/runs/${r.id}`)).json()).workflow.nodes.seed.params.value));
  });
  check.ok(JSON.stringify([...seeds].sort()) === JSON.stringify([5, 6, 7]), `the three runs used seeds 5, 6, 7 (${seeds})`);
  await screenshot(page, options.artifacts, "e2e-comfy-queue-x3");

  // mute (Ctrl+M) leaves a node and what depends on it out of the run; bypass leaves the node out
  const lastRun = () =>
    page.evaluate(async () => {
      const runs = await (await fetch("/api/runs?limit=1")).json();
      const id = (Array.isArray(runs) ? runs : runs.runs)[0].id;
      const record = await (await fetch(`/api/runs/${id}`)).json();
      return { id, nodes: Object.keys(record.workflow.nodes), ran: [...record.executed, ...record.cached], status: record.status };
    });
  await page.getByTestId("seed-control").selectOption("fixed");
  await page.getByTestId("queue-count").fill("1");
  await node(page, "seed").locator(".dg-node-header").click();
  await page.keyboard.press("Control+m");
  await page.locator('[data-testid="node-seed"].is-muted').waitFor();
  const previous = (await lastRun()).id;
  await page.getByTestId("run").click();
  await page.waitForFunction(async (old) => {
    const runs = await (await fetch("/api/runs?limit=1")).json();
    const run = (Array.isArray(runs) ? runs : runs.runs)[0];
    return run.id !== old && run.status === "succeeded";
  }, previous);
  const muted = await lastRun();
  check.ok(muted.nodes.length === 0, `a muted seed and the Float it feeds stay out of the run (sent: ${muted.nodes})`);
  await screenshot(page, options.artifacts, "e2e-comfy-muted");
  await page.keyboard.press("Control+m");
  await page.locator('[data-testid="node-seed"]:not(.is-muted)').waitFor();
  await node(page, "float").getByTestId("bypass").click();
  await page.locator('[data-testid="node-float"].is-bypassed').waitFor();
  await page.getByTestId("run").click();
  await page.waitForFunction(async (old) => {
    const runs = await (await fetch("/api/runs?limit=1")).json();
    const run = (Array.isArray(runs) ? runs : runs.runs)[0];
    return run.id !== old && run.status === "succeeded";
  }, muted.id);
  const bypassed = await lastRun();
  check.ok(
    JSON.stringify(bypassed.nodes) === '["seed"]' && JSON.stringify(bypassed.ran) === '["seed"]',
    `a bypassed Float is left out, the seed still runs or comes from the cache (sent ${bypassed.nodes}, ran ${bypassed.ran})`,
  );
  await screenshot(page, options.artifacts, "e2e-comfy-bypassed");

  // Ctrl+G frames the selected nodes in a titled group; dragging its title moves them with it
  await node(page, "float").getByTestId("bypass").click();
  await node(page, "seed").locator(".dg-node-header").click();
  await node(page, "float").locator(".dg-node-header").click({ modifiers: ["Control"] });
  await page.keyboard.press("Control+g");
  const frame = page.getByTestId("group-g1");
  await frame.waitFor();
  const seedStart = await box(page.locator('.react-flow__node[data-id="seed"]'));
  const floatStart = await box(page.locator('.react-flow__node[data-id="float"]'));
  const frameBox = await box(frame);
  check.ok(inside(seedStart, frameBox) && inside(floatStart, frameBox), "the group's frame surrounds its nodes");
  const title = await frame.locator(".frame-title").boundingBox();
  await page.mouse.move(title.x + 20, title.y + title.height / 2);
  await page.mouse.down();
  await page.mouse.move(title.x + 170, title.y + title.height / 2 + 60, { steps: 8 });
  await page.mouse.up();
  const seedEnd = await box(page.locator('.react-flow__node[data-id="seed"]'));
  const floatEnd = await box(page.locator('.react-flow__node[data-id="float"]'));
  const frameEnd = await box(frame);
  const [dx, dy] = [frameEnd.left - frameBox.left, frameEnd.top - frameBox.top];
  check.ok(
    dx > 100 && dy > 40 && Math.abs(seedEnd.left - seedStart.left - dx) < 2 && Math.abs(floatEnd.top - floatStart.top - dy) < 2,
    `dragging the group moves its nodes with it (frame by ${dx},${dy}; seed by ${seedEnd.left - seedStart.left}, float by ${floatEnd.top - floatStart.top})`,
  );
  await screenshot(page, options.artifacts, "e2e-comfy-group");

  // model params offer the models the server knows
  await page.getByTestId("tab-nodes").click();
  await page.getByTestId("palette-LoadPipeline").click();
  await node(page, "loadpipeline").waitFor();
  const choices = await modelChoices(node(page, "loadpipeline"));
  check.ok(choices.includes("models/tiny-sd"), `LoadPipeline's model offers the models the server knows (${choices.join(", ")})`);

  // the shortcuts are listed in a help panel
  await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("?");
  await page.getByTestId("shortcuts").waitFor();
  check.ok((await page.getByTestId("shortcuts").textContent()).includes("Ctrl+Enter"), "? opens the keyboard shortcuts");
  await screenshot(page, options.artifacts, "e2e-comfy-shortcuts");
  await page.keyboard.press("Escape");
  await page.getByTestId("shortcuts").waitFor({ state: "detached" });
}

/** Issue 16's leftovers: an upload's thumbnail after a reload, a group deleted with the Delete key,
 * and model params listing only the models of their kind. */
async function widgets(page) {
  await newWorkflow(page);
  await page.getByTestId("palette-LoadImage").click();
  const load = node(page, "loadimage");
  await load.waitFor();
  await load.locator('input[type="file"]').setInputFiles(options.image);
  const thumbnail = load.locator("img.thumbnail");
  await thumbnail.waitFor();
  const uploaded = await load.locator('input[data-param="image"]').inputValue();
  check.ok(/^[0-9a-f]+\.png$/.test(uploaded), `the upload's name is in the node (${uploaded})`);
  const pictureSize = (img) => img.evaluate(async (el) => (await el.decode(), [el.naturalWidth, el.naturalHeight, el.getAttribute("src")]));
  const before = await pictureSize(thumbnail);
  check.ok(before[0] === 64 && before[1] === 48, `the thumbnail shows the picture (${before})`);
  await page.waitForFunction(
    (name) => JSON.parse(localStorage.getItem("diffgraph:working-graph") ?? "{}").document?.nodes?.loadimage?.params?.image === name,
    uploaded,
  );
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  await node(page, "loadimage").locator("img.thumbnail").waitFor();
  const after = await pictureSize(node(page, "loadimage").locator("img.thumbnail"));
  check.ok(
    after[0] === 64 && after[1] === 48 && after[2] === `/api/uploads/${uploaded}`,
    `after a reload the thumbnail still shows, read back from the server (${after})`,
  );
  await screenshot(page, options.artifacts, "e2e-widgets-thumbnail-after-reload");
  // a name the server has no upload for shows no (broken) thumbnail
  await node(page, "loadimage").locator('input[data-param="image"]').fill("no-such-upload.png");
  const hidden = await node(page, "loadimage").locator("img.thumbnail").waitFor({ state: "detached", timeout: 10_000 }).then(() => true, () => false);
  check.ok(hidden, "a name that is no upload shows no (broken) thumbnail");
  await node(page, "loadimage").locator('input[data-param="image"]').fill(uploaded);

  // a group is selected by its title and removed with the Delete key; its nodes stay
  await page.getByTestId("palette-Seed").click();
  await node(page, "seed").waitFor();
  await node(page, "loadimage").locator(".dg-node-header").click();
  await node(page, "seed").locator(".dg-node-header").click({ modifiers: ["Control"] });
  await page.keyboard.press("Control+g");
  const frame = page.getByTestId("group-g1");
  await frame.waitFor();
  await frame.locator(".frame-title span").click();
  await page.locator('.react-flow__node-frame.selected').waitFor();
  await screenshot(page, options.artifacts, "e2e-widgets-group-selected");
  await page.keyboard.press("Delete");
  await frame.waitFor({ state: "detached" });
  const left = await page.locator(".react-flow__node").evaluateAll((els) => els.map((el) => el.getAttribute("data-id")).sort());
  check.ok(JSON.stringify(left) === '["loadimage","seed"]', `Delete removes the selected group and keeps its nodes (${left})`);
  // the kept working graph (written a moment after each edit) no longer has the group
  const saved = await page
    .waitForFunction(() => JSON.parse(localStorage.getItem("diffgraph:working-graph") ?? "{}").document?.metadata?.groups === undefined, null, { timeout: 10_000 })
    .then(() => true, () => false);
  await page.keyboard.press("Control+z");
  const back = await frame.waitFor({ timeout: 10_000 }).then(() => true, () => false);
  check.ok(saved && back, `the deleted group is gone from the document (${saved}); Ctrl+Z brings it back (${back})`);
  await screenshot(page, options.artifacts, "e2e-widgets-group-deleted-and-undone");

  // a model param lists the models of its kind: LoadVAE offers VAEs (and pipelines holding one)
  const offered = async (type, id) => {
    await page.getByTestId(`palette-${type}`).click();
    await node(page, id).waitFor();
    return modelChoices(node(page, id));
  };
  const vaes = await offered("LoadVAE", "loadvae");
  const pipelines = await offered("LoadPipeline", "loadpipeline");
  check.ok(vaes.includes("e2e-vae") && vaes.includes("models/tiny-sd") && !vaes.includes("loras/e2e-style.safetensors"),
    `LoadVAE offers VAEs and pipelines holding one (${vaes.join(", ")})`);
  check.ok(pipelines.includes("models/tiny-sd") && !pipelines.includes("e2e-vae"), `LoadPipeline offers pipelines only (${pipelines.join(", ")})`);
  await screenshot(page, options.artifacts, "e2e-widgets-models-by-kind");
}

/** Issue 15 in the editor: the compile toggle asks for `options.compile`, and the sampler shows the
 * compile stage (counting seconds) and then how long compiling took, instead of a silent pause. */
async function compile(page) {
  await openTemplate(page, "txt2img");
  const toggle = page.getByTestId("compile-toggle");
  check.ok(!(await toggle.isChecked()), "compile is off until asked for");
  await toggle.check();
  await page.getByTestId("run").click();
  const sampler = page.locator('[data-node-type="SampleLoop"]').first();
  const counting = await sampler
    .locator('[data-testid="node-state"]', { hasText: /^compiling… \d+ s$/ })
    .waitFor({ timeout: 120_000 })
    .then(() => true, () => false);
  const compilingWords = await sampler.locator('[data-testid="node-stage"][data-stage="compile"]').textContent({ timeout: 1000 }).catch(() => "");
  check.ok(counting && /compiling the unet for \S+ inputs/.test(compilingWords), `the sampler shows "compiling… N s" while the denoiser compiles (${compilingWords})`);
  await screenshot(page, options.artifacts, "e2e-compile-compiling");
  const compiled = sampler.locator('[data-testid="node-stage"][data-stage="compiled"]');
  await compiled.waitFor({ timeout: 240_000 });
  const compiledWords = await compiled.textContent();
  check.ok(/^compiled the unet in \d+(\.\d)?s/.test(compiledWords), `then it says how long compiling took (${compiledWords})`);
  await waitForRunEnd(page);
  const save = page.locator('[data-node-type="SaveImage"]').first();
  check.ok((await save.getAttribute("data-state")) === "done" && (await save.locator('[data-testid="node-images"] img').count()) > 0, "the compiled run wrote its image");
  check.ok((await compiled.count()) === 1, "the compile seconds stay on the sampler after the run");
  const run = await page.evaluate(async () => (await (await fetch("/api/runs?limit=1")).json()).runs[0]);
  check.ok(run?.options?.compile === true && run.status === "succeeded", `the run was submitted with options.compile (${JSON.stringify(run?.options)})`);
  await screenshot(page, options.artifacts, "e2e-compile-compiled");
}

/** Issue 12 in the editor with no editor change beyond widgets: the controlnet template's control
 * image is an upload, its controlnet param lists the server's ControlNets, and it runs. */
async function controlnet(page) {
  await openTemplate(page, "controlnet");
  const controlImage = page.getByTestId("template-param-control_image");
  check.ok((await controlImage.getByTestId("upload-control_image").count()) === 1, "control_image is an upload widget in the params panel");
  await page.getByTestId("upload-input-control_image").setInputFiles(options.image);
  await page.getByTestId("preview-control_image").waitFor();
  const uploaded = await page.getByRole("textbox", { name: "control_image", exact: true }).inputValue();
  check.ok(/^[0-9a-f]+\.png$/.test(uploaded), `uploading sets the control_image param to the upload (${uploaded})`);
  const offered = await modelChoices(page.getByTestId("template-param-controlnet"));
  check.ok(offered.includes("e2e-controlnet") && !offered.includes("e2e-sd"), `the controlnet param offers the server's ControlNets only (${offered.join(", ")})`);
  await page.getByTestId("template-param-controlnet").locator('input[data-param="controlnet"]').fill("e2e-controlnet");
  await screenshot(page, options.artifacts, "e2e-controlnet-params");
  await page.getByTestId("run").click();
  const save = page.locator('[data-node-type="SaveImage"]').first();
  await save.locator('[data-testid="node-images"] img').first().waitFor({ timeout: 240_000 });
  await waitForRunEnd(page);
  const picture = await save.locator('[data-testid="node-images"] img').first().evaluate(async (img) => (await img.decode(), [img.naturalWidth, img.naturalHeight]));
  check.ok(picture[0] > 0 && picture[1] > 0, `the controlnet template ran and shows its picture (${picture})`);
  const states = await page.locator(".react-flow__node [data-testid^='node-'][data-state]").evaluateAll((els) =>
    Object.fromEntries(els.map((el) => [el.getAttribute("data-node-type"), el.getAttribute("data-state")])),
  );
  check.ok(["LoadControlNet", "ApplyControlNet", "LoadImage"].every((t) => states[t] === "done" || states[t] === "cached"), `the ControlNet nodes ran (${JSON.stringify(states)})`);
  await screenshot(page, options.artifacts, "e2e-controlnet-ran");
}

const scenarios = { palette, incompatible, broken, txt2img, library, newuser, comfy, widgets, compile, controlnet };
if (!scenarios[scenario]) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}

const browser = await launch();
let page;
try {
  const opened = await openEditor(browser, url);
  page = opened.page;
  await scenarios[scenario](page);
  await screenshot(page, options.artifacts, `e2e-${scenario}`);
  const problems = opened.problems.filter((p) => !/Failed to load resource/.test(p));
  check.ok(problems.length === 0, `no errors in the page${problems.length ? `: ${problems.join(" | ")}` : ""}`);
} catch (error) {
  check.ok(false, `scenario ${scenario} crashed: ${error.stack ?? error}`);
  if (page) await screenshot(page, options.artifacts, `e2e-${scenario}-crash`).catch(() => {});
} finally {
  await browser.close();
}
console.log(check.failures.length ? `${check.failures.length} check(s) failed` : "all checks passed");
process.exit(check.failures.length ? 1 : 0);
