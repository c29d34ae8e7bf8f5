// Conversion between a workflow document (DESIGN.md format v1) and the editor's graph.
//
// The document is the source of truth: converting it to a graph and back gives the same document
// (same keys, same order), plus a `metadata.position` per node that the engine ignores. Anything
// the editor cannot draw (a link to a missing node, a malformed link) is kept verbatim so the
// server can report it on the node instead of the editor silently dropping it.

import type { Edge, Node } from "@xyflow/react";
import type { Catalog, WorkflowDocument, WorkflowNode } from "./types";
import { layoutPositions } from "./layout";

export interface DgNodeData extends Record<string, unknown> {
  /** the node type, e.g. "SampleLoop" or "workflow:txt2img" */
  type: string;
  /** literal params exactly as written (only the keys the document sets; defaults come from the catalog) */
  params: Record<string, unknown>;
  /** the node's `metadata` minus nothing: position is refreshed from the canvas on save */
  metadata?: Record<string, unknown>;
  /** key order of the node's mapping, and any keys the editor does not know (kept verbatim) */
  keyOrder: string[];
  extra: Record<string, unknown>;
  /** order of names under `inputs` in the file, so saving keeps it */
  inputOrder: string[];
  /** `inputs` entries that are not links to an existing node; kept so validation reports them */
  dangling: Record<string, unknown>;
}

export type DgNode = Node<DgNodeData, "dg">;
export type DgEdge = Edge;

export interface Graph {
  /** the document without its nodes (format, name, params, outputs, ...), key order kept */
  base: WorkflowDocument;
  nodes: DgNode[];
  edges: DgEdge[];
}

const NODE_KEYS = ["type", "inputs", "params", "metadata"];

export function edgeId(source: string, sourceHandle: string, target: string, targetHandle: string): string {
  return `${source}.${sourceHandle}->${target}.${targetHandle}`;
}

/** `node.output` -> [node, output]; node ids never contain a dot, output names may not either. */
export function parseLink(value: unknown): [string, string] | null {
  if (typeof value !== "string") return null;
  const dot = value.indexOf(".");
  if (dot <= 0 || dot === value.length - 1) return null;
  return [value.slice(0, dot), value.slice(dot + 1)];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readPosition(metadata: unknown): { x: number; y: number } | null {
  if (!isRecord(metadata) || !isRecord(metadata.position)) return null;
  const { x, y } = metadata.position;
  return typeof x === "number" && typeof y === "number" ? { x, y } : null;
}

export function workflowToGraph(doc: WorkflowDocument, catalog?: Catalog): Graph {
  const base: WorkflowDocument = {};
  for (const [key, value] of Object.entries(doc)) base[key] = key === "nodes" ? null : value;
  const rawNodes = isRecord(doc.nodes) ? (doc.nodes as Record<string, unknown>) : {};
  const ids = new Set(Object.keys(rawNodes));
  const nodes: DgNode[] = [];
  const edges: DgEdge[] = [];
  let missingPosition = false;
  for (const [id, raw] of Object.entries(rawNodes)) {
    const spec: Record<string, unknown> = isRecord(raw) ? raw : { type: raw };
    const extra: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(spec)) if (!NODE_KEYS.includes(key)) extra[key] = value;
    const inputs = isRecord(spec.inputs) ? spec.inputs : {};
    const dangling: Record<string, unknown> = {};
    if (spec.inputs !== undefined && !isRecord(spec.inputs)) dangling[""] = spec.inputs;
    for (const [name, value] of Object.entries(inputs)) {
      const link = parseLink(value);
      if (link && ids.has(link[0])) {
        edges.push({
          id: edgeId(link[0], link[1], id, name),
          type: "typed",
          source: link[0],
          sourceHandle: link[1],
          target: id,
          targetHandle: name,
        });
      } else {
        dangling[name] = value;
      }
    }
    const position = readPosition(spec.metadata);
    if (!position) missingPosition = true;
    nodes.push({
      id,
      type: "dg",
      position: position ?? { x: 0, y: 0 },
      data: {
        type: typeof spec.type === "string" ? spec.type : String(spec.type ?? ""),
        params: isRecord(spec.params) ? { ...spec.params } : {},
        metadata: isRecord(spec.metadata) ? { ...spec.metadata } : undefined,
        keyOrder: Object.keys(spec),
        extra,
        inputOrder: Object.keys(inputs),
        dangling,
      },
    });
  }
  if (catalog) {
    const typeOf = new Map(nodes.map((n) => [n.id, n.data.type]));
    for (const edge of edges) {
      const type = catalog[typeOf.get(edge.source) ?? ""]?.outputs.find((o) => o.name === edge.sourceHandle)?.type;
      if (type) edge.data = { type };
    }
  }
  if (missingPosition) {
    const placed = layoutPositions(nodes, edges, catalog);
    for (const node of nodes) {
      if (!readPosition(node.data.metadata)) node.position = placed[node.id];
    }
  }
  return { base, nodes, edges };
}

function withPosition(metadata: Record<string, unknown> | undefined, x: number, y: number) {
  const position = { x: Math.round(x), y: Math.round(y) };
  if (!metadata) return { position };
  // replace in place so a hand-written metadata block keeps its key order
  return Object.fromEntries(
    "position" in metadata
      ? Object.entries(metadata).map(([k, v]) => [k, k === "position" ? position : v])
      : [...Object.entries(metadata), ["position", position]],
  );
}

export function graphToWorkflow(graph: Graph): WorkflowDocument {
  const incoming = new Map<string, DgEdge[]>();
  for (const edge of graph.edges) {
    const list = incoming.get(edge.target) ?? [];
    list.push(edge);
    incoming.set(edge.target, list);
  }
  const nodes: Record<string, WorkflowNode> = {};
  for (const node of graph.nodes) {
    const data = node.data;
    const linked: Record<string, string> = {};
    for (const edge of incoming.get(node.id) ?? []) {
      linked[edge.targetHandle ?? ""] = `${edge.source}.${edge.sourceHandle ?? ""}`;
    }
    const inputs: Record<string, unknown> = {};
    for (const name of data.inputOrder) {
      if (name in linked) inputs[name] = linked[name];
      else if (name in data.dangling) inputs[name] = data.dangling[name];
    }
    for (const [name, value] of Object.entries(linked)) if (!(name in inputs)) inputs[name] = value;
    for (const [name, value] of Object.entries(data.dangling)) {
      if (name !== "" && !(name in inputs)) inputs[name] = value;
    }
    // a param fed by a link is named under `inputs` only
    const params = Object.fromEntries(Object.entries(data.params).filter(([name]) => !(name in linked)));
    const values: Record<string, unknown> = {
      type: data.type,
      inputs: "" in data.dangling ? data.dangling[""] : inputs,
      params,
      metadata: withPosition(data.metadata, node.position.x, node.position.y),
      ...data.extra,
    };
    const written = new Set(data.keyOrder);
    const out: Record<string, unknown> = {};
    const keys = [...data.keyOrder, ...NODE_KEYS.filter((k) => !written.has(k))];
    for (const key of keys) {
      if (!(key in values)) continue;
      const value = values[key];
      const empty = isRecord(value) && Object.keys(value).length === 0;
      if ((key === "inputs" || key === "params") && empty && !written.has(key)) continue;
      out[key] = value;
    }
    nodes[node.id] = out as WorkflowNode;
  }
  const doc: WorkflowDocument = {};
  let placed = false;
  for (const [key, value] of Object.entries(graph.base)) {
    if (key === "nodes") {
      doc.nodes = nodes;
      placed = true;
    } else {
      doc[key] = value;
    }
  }
  if (!placed) doc.nodes = nodes;
  return doc;
}

/** A node id not used yet, derived from the type ("SampleLoop" -> "sampleloop", "sampleloop_2"). */
export function freshId(type: string, taken: Set<string>): string {
  const stem = type.replace(/^workflow:/, "").replace(/[^A-Za-z0-9_-]/g, "_").toLowerCase() || "node";
  if (!taken.has(stem)) return stem;
  for (let i = 2; ; i++) if (!taken.has(`${stem}_${i}`)) return `${stem}_${i}`;
}

/** An empty document for "New". */
export function emptyWorkflow(): WorkflowDocument {
  return { format: "diffgraph/v1", name: "untitled", nodes: {} };
}
