// What a run sends for a document whose nodes are muted or bypassed (editor flags kept in each
// node's `metadata`, which the engine ignores): muted nodes and everything downstream of them are
// left out; a bypassed node is left out and each link from it is rewired to what fed its input of
// the same type, so the data passes through it unchanged.

import { parseLink } from "./convert";
import { accepts } from "./graphRules";
import type { Catalog, WorkflowDocument, WorkflowNode } from "./types";

export interface Runnable {
  document: WorkflowDocument;
  /** nodes left out of the run, and why */
  skipped: { node: string; reason: "muted" | "bypassed" | "downstream of a muted node" }[];
}

const flag = (node: WorkflowNode, name: string) => (node.metadata as Record<string, unknown> | undefined)?.[name] === true;

export function runnableDocument(doc: WorkflowDocument, catalog: Catalog): Runnable {
  const nodes = { ...(doc.nodes ?? {}) } as Record<string, WorkflowNode>;
  const skipped: Runnable["skipped"] = [];
  const typeOfOutput = (id: string, output: string) => catalog[doc.nodes?.[id]?.type ?? ""]?.outputs.find((o) => o.name === output)?.type;

  // a bypassed node's output -> the link that fed its first input taking that type
  const passThrough = (id: string, output: string): string | null => {
    const node = doc.nodes?.[id];
    const type = typeOfOutput(id, output);
    if (!node || !type) return null;
    const spec = catalog[node.type];
    for (const [port, value] of Object.entries(node.inputs ?? {})) {
      const link = parseLink(value);
      const portSpec = spec?.inputs.find((p) => p.name === port) ?? spec?.params.find((p) => p.name === port);
      if (link && portSpec && accepts({ type, accepts: [type] }, portSpec.type)) return value as string;
    }
    return null;
  };

  const resolve = (value: string, seen: Set<string>): string | null => {
    const link = parseLink(value);
    if (!link) return value;
    const [id, output] = link;
    const node = doc.nodes?.[id];
    if (!node || !flag(node, "bypassed") || seen.has(id)) return value;
    seen.add(id);
    const fed = passThrough(id, output);
    return fed === null ? null : resolve(fed, seen);
  };

  for (const [id, node] of Object.entries(nodes)) {
    if (flag(node, "bypassed")) {
      delete nodes[id];
      skipped.push({ node: id, reason: "bypassed" });
    }
  }
  for (const [id, node] of Object.entries(nodes)) {
    if (!node.inputs || typeof node.inputs !== "object") continue;
    const inputs: Record<string, string> = {};
    for (const [port, value] of Object.entries(node.inputs)) {
      const resolved = typeof value === "string" ? resolve(value, new Set()) : value;
      if (resolved !== null) inputs[port] = resolved;
    }
    nodes[id] = { ...node, inputs };
  }

  // muted nodes and all that depends on them (iteratively: links only point at earlier results)
  const dropped = new Set(Object.keys(nodes).filter((id) => flag(nodes[id], "muted")));
  for (const id of dropped) skipped.push({ node: id, reason: "muted" });
  let grew = true;
  while (grew) {
    grew = false;
    for (const [id, node] of Object.entries(nodes)) {
      if (dropped.has(id)) continue;
      const needs = Object.values(node.inputs ?? {}).some((v) => {
        const link = parseLink(v);
        return link && dropped.has(link[0]);
      });
      if (needs) {
        dropped.add(id);
        skipped.push({ node: id, reason: "downstream of a muted node" });
        grew = true;
      }
    }
  }
  for (const id of dropped) delete nodes[id];

  let outputs = doc.outputs;
  if (outputs && typeof outputs === "object") {
    const kept: Record<string, string> = {};
    for (const [name, value] of Object.entries(outputs)) {
      const resolved = typeof value === "string" ? resolve(value, new Set()) : null;
      const link = resolved ? parseLink(resolved) : null;
      if (resolved && (!link || nodes[link[0]])) kept[name] = resolved;
    }
    outputs = kept;
  }
  return { document: { ...doc, nodes, ...(doc.outputs ? { outputs } : {}) }, skipped };
}
