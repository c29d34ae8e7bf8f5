// How run events from the server's WebSocket become per-node states on the canvas.

import { beforeEach, describe, expect, it } from "vitest";
import { StatusStore } from "../src/nodeStatus";
import { applyRunEvent, decodePreview, markUpstreamCached, showRunRecord } from "../src/runEvents";

const EDGES = [
  { source: "load", target: "encode" },
  { source: "load", target: "sample" },
  { source: "encode", target: "sample" },
  { source: "sample", target: "decode" },
  { source: "decode", target: "save" },
];
const IDS = ["load", "encode", "sample", "decode", "save"];

function states(): Record<string, string | undefined> {
  return Object.fromEntries(IDS.map((id) => [id, statusStore.get(id).state]));
}

let statusStore = new StatusStore();

describe("run events", () => {
  beforeEach(() => {
    statusStore = new StatusStore();
    for (const id of IDS) statusStore.update(id, { state: "queued" });
  });

  it("shows a compile stage on its node, then the compiled stage's words, until the next run clears it", () => {
    applyRunEvent(statusStore, { type: "node_started", run_id: "r", node: "sample" });
    const before = Date.now();
    applyRunEvent(statusStore, { type: "node_stage", run_id: "r", node: "sample", stage: "compile", message: "compiling the unet for 2x4x8x8 inputs" });
    const compiling = statusStore.get("sample");
    expect(compiling).toMatchObject({ state: "running", stage: { name: "compile", message: "compiling the unet for 2x4x8x8 inputs" } });
    expect(compiling.stage!.since).toBeGreaterThanOrEqual(before);
    applyRunEvent(statusStore, { type: "node_stage", run_id: "r", node: "sample", stage: "compiled", message: "compiled the unet in 12.3s" });
    applyRunEvent(statusStore, { type: "progress", run_id: "r", node: "sample", step: 1, total: 2 });
    expect(statusStore.get("sample")).toMatchObject({ state: "running", step: 1, stage: { name: "compiled", message: "compiled the unet in 12.3s" } });
    applyRunEvent(statusStore, { type: "node_finished", run_id: "r", node: "sample" });
    expect(statusStore.get("sample").stage?.name).toBe("compiled");  // the seconds stay readable after the run
    statusStore.clear("run");
    expect(statusStore.get("sample").stage).toBeUndefined();
  });

  it("a stage of an inner node of a subgraph shows on the outer node", () => {
    applyRunEvent(statusStore, { type: "node_stage", run_id: "r", node: "sample/inner", stage: "eager", message: "not compiling the unet: a LoRA" });
    expect(statusStore.get("sample").stage).toMatchObject({ name: "eager", message: "not compiling the unet: a LoRA" });
  });

  it("shows running with step i/n, then done, and images from run_finished outputs", () => {
    applyRunEvent(statusStore, { type: "node_started", run_id: "r", node: "sample" });
    applyRunEvent(statusStore, { type: "progress", run_id: "r", node: "sample", step: 3, total: 10 });
    expect(statusStore.get("sample")).toMatchObject({ state: "running", step: 3, total: 10 });
    applyRunEvent(statusStore, { type: "node_finished", run_id: "r", node: "sample" });
    const end = applyRunEvent(statusStore, { type: "run_finished", run_id: "r", outputs: { save: ["run/a b.png", "run/c.json"] } });
    expect(end).toMatchObject({ done: true, message: "Run finished." });
    expect(statusStore.get("sample").state).toBe("done");
    expect(statusStore.get("save").images).toEqual(["/api/outputs/run/a%20b.png"]);
    // nodes the run never reached lose their "queued" badge
    expect(statusStore.get("load").state).toBeUndefined();
  });

  it("marks what feeds a cached node as cached, but not a node that ran", () => {
    applyRunEvent(statusStore, { type: "node_cached", run_id: "r", node: "decode" });
    markUpstreamCached(statusStore, "decode", EDGES);
    applyRunEvent(statusStore, { type: "node_started", run_id: "r", node: "save" });
    expect(states()).toEqual({ load: "cached", encode: "cached", sample: "cached", decode: "cached", save: "running" });
  });

  it("puts a node's failure, with its field, on that node", () => {
    applyRunEvent(statusStore, { type: "node_failed", run_id: "r", node: "encode", field: "text", error: "too long" });
    const end = applyRunEvent(statusStore, { type: "run_failed", run_id: "r", node: "encode", error: "encode: too long" });
    expect(statusStore.get("encode")).toMatchObject({ state: "failed", error: "text: too long" });
    expect(end).toMatchObject({ done: true, error: true });
    expect(end.message).toContain("too long");
  });

  it("after Cancel, finished nodes keep their badge and the interrupted one keeps its preview", () => {
    applyRunEvent(statusStore, { type: "node_finished", run_id: "r", node: "load", seconds: 1.25 });
    applyRunEvent(statusStore, { type: "node_started", run_id: "r", node: "sample" });
    statusStore.update("sample", { preview: "blob:preview" });
    const end = applyRunEvent(statusStore, { type: "run_cancelled", run_id: "r" });
    expect(end).toMatchObject({ done: true, message: "Run cancelled." });
    expect(statusStore.get("load")).toMatchObject({ state: "done", seconds: 1.25 });
    expect(statusStore.get("sample")).toMatchObject({ state: "cancelled", preview: "blob:preview" });
    expect(statusStore.get("save").state).toBeUndefined();
  });

  it("two editors' stores are separate", () => {
    const other = new StatusStore();
    applyRunEvent(statusStore, { type: "node_started", run_id: "r", node: "sample" });
    expect(other.get("sample").state).toBeUndefined();
  });

  it("shows subgraph inner nodes on their outer node", () => {
    applyRunEvent(statusStore, { type: "node_started", run_id: "r", node: "sample/inner" });
    expect(statusStore.get("sample").state).toBe("running");
  });

  it("rebuilds states of a past run from its record", () => {
    showRunRecord(statusStore, 
      { id: "r", status: "succeeded", executed: ["save"], cached: ["decode"], outputs: { save: ["x.png"] } },
      EDGES,
    );
    expect(states()).toEqual({ load: "cached", encode: "cached", sample: "cached", decode: "cached", save: "done" });
    expect(statusStore.get("save").images).toEqual(["/api/outputs/x.png"]);
  });
});

describe("preview frames", () => {
  it("decode the 4-byte header length, the JSON header and the image bytes", async () => {
    const header = new TextEncoder().encode(JSON.stringify({ type: "preview", run_id: "r", node: "sample", step: 2, total: 5 }));
    const frame = new Uint8Array(4 + header.length + 3);
    new DataView(frame.buffer).setUint32(0, header.length);
    frame.set(header, 4);
    frame.set([255, 216, 255], 4 + header.length);
    const decoded = decodePreview(frame.buffer);
    expect(decoded?.header).toMatchObject({ node: "sample", step: 2 });
    expect(decoded?.image.type).toBe("image/jpeg");
    expect(new Uint8Array(await decoded!.image.arrayBuffer())).toEqual(new Uint8Array([255, 216, 255]));
    expect(decodePreview(new Uint8Array([0, 0, 0, 99]).buffer)).toBeNull();
  });
});
