// Applies the server's run events (GET /ws) to the per-node status store.

import { outputUrl, type RunRecord } from "./api";
import { canvasNodeId, type StatusStore } from "./nodeStatus";

export interface RunEvent {
  type: string;
  run_id: string;
  node?: string | null;
  step?: number;
  total?: number;
  error?: string | null;
  field?: string | null;
  outputs?: Record<string, string[]>;
  [key: string]: unknown;
}

const IMAGE_FILE = /\.(png|jpe?g|webp|gif|bmp)$/i;

/** Output images of each canvas node, from a run's `outputs` (node id -> file names). */
export function showOutputs(statusStore: StatusStore, outputs: Record<string, string[]> | undefined): void {
  const byNode = new Map<string, string[]>();
  for (const [node, names] of Object.entries(outputs ?? {})) {
    const id = canvasNodeId(node);
    const urls = (names ?? []).filter((n) => IMAGE_FILE.test(n)).map(outputUrl);
    byNode.set(id, [...(byNode.get(id) ?? []), ...urls]);
  }
  for (const [id, images] of byNode) statusStore.update(id, { images });
}

/** Node states of a finished run from its record (history panel). */
export function showRunRecord(statusStore: StatusStore, run: RunRecord, edges: { source: string; target: string }[]): void {
  statusStore.clear("run");
  for (const id of statusStore.ids()) statusStore.update(id, { images: [] });
  for (const id of run.executed ?? []) statusStore.update(canvasNodeId(id), { state: "done" });
  const ran = new Set([...(run.executed ?? []), ...(run.cached ?? [])].map(canvasNodeId));
  for (const id of statusStore.ids()) if (!ran.has(id)) statusStore.update(id, { state: "queued" });
  for (const id of run.cached ?? []) {
    statusStore.update(canvasNodeId(id), { state: "cached" });
    markUpstreamCached(statusStore, canvasNodeId(id), edges);
  }
  for (const id of statusStore.ids()) if (statusStore.get(id).state === "queued") statusStore.update(id, { state: undefined });
  if (run.failed_node) {
    statusStore.update(canvasNodeId(run.failed_node), { state: "failed", error: run.error ?? "failed" });
  }
  showOutputs(statusStore, run.outputs);
}

/** Returns a message for the user when the event ends the run, else null. */
export function applyRunEvent(statusStore: StatusStore, event: RunEvent): { done: boolean; message?: string; error?: boolean } {
  const id = event.node ? canvasNodeId(event.node) : null;
  switch (event.type) {
    case "node_cached":
      if (id) statusStore.update(id, { state: "cached", error: undefined });
      break;
    case "node_started":
      if (id) statusStore.update(id, { state: "running", step: undefined, total: undefined, error: undefined, stage: undefined });
      break;
    case "node_stage":
      if (id && typeof event.stage === "string") {
        const message = typeof event.message === "string" ? event.message : event.stage;
        statusStore.update(id, { state: "running", stage: { name: event.stage, message, since: Date.now() } });
      }
      break;
    case "progress":
      if (id) statusStore.update(id, { state: "running", step: event.step, total: event.total });
      break;
    case "node_finished":
      if (id && event.node === id) {
        statusStore.update(id, { state: "done", seconds: typeof event.seconds === "number" ? event.seconds : undefined });
      }
      break;
    case "node_failed":
      if (id) {
        const where = event.field ? `${event.field}: ` : "";
        statusStore.update(id, { state: "failed", error: `${where}${event.error ?? "failed"}` });
      }
      break;
    case "run_finished":
      finishPending(statusStore);
      showOutputs(statusStore, event.outputs);
      return { done: true, message: "Run finished." };
    case "run_failed":
      finishPending(statusStore);
      if (id && statusStore.get(id).state !== "failed") {
        statusStore.update(id, { state: "failed", error: event.error ?? "failed" });
      }
      showOutputs(statusStore, event.outputs);
      return { done: true, message: `Run failed: ${event.error ?? "unknown error"}`, error: true };
    case "run_cancelled":
      // what ran keeps its badge; the node that was interrupted says so and keeps its preview
      for (const node of statusStore.ids()) {
        if (statusStore.get(node).state === "running") statusStore.update(node, { state: "cancelled" });
      }
      finishPending(statusStore);
      return { done: true, message: "Run cancelled." };
  }
  return { done: false };
}

/** Marks the nodes still queued upstream of a cached node as cached: the run reuses their results. */
export function markUpstreamCached(statusStore: StatusStore, id: string, edges: { source: string; target: string }[]): void {
  const feeding = new Map<string, string[]>();
  for (const e of edges) feeding.set(e.target, [...(feeding.get(e.target) ?? []), e.source]);
  const stack = [...(feeding.get(id) ?? [])];
  const seen = new Set<string>();
  while (stack.length) {
    const current = stack.pop()!;
    if (seen.has(current)) continue;
    seen.add(current);
    if (statusStore.get(current).state !== "queued") continue;
    statusStore.update(current, { state: "cached", error: undefined });
    stack.push(...(feeding.get(current) ?? []));
  }
}

/** Nodes still waiting when a run ends were not needed (or never reached): clear their badge. */
function finishPending(statusStore: StatusStore): void {
  for (const id of statusStore.ids()) {
    const state = statusStore.get(id).state;
    if (state === "queued" || state === "running") statusStore.update(id, { state: undefined });
  }
}

/** Decodes a binary preview frame: 4-byte big-endian header length, JSON header, JPEG bytes. */
export function decodePreview(buffer: ArrayBuffer): { header: RunEvent; image: Blob } | null {
  if (buffer.byteLength < 4) return null;
  const length = new DataView(buffer).getUint32(0);
  if (4 + length > buffer.byteLength) return null;
  try {
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length))) as RunEvent;
    const format = typeof header.format === "string" ? header.format : "jpeg";
    return { header, image: new Blob([new Uint8Array(buffer, 4 + length)], { type: `image/${format}` }) };
  } catch {
    return null;
  }
}
