// The rules of the graph the editor enforces while editing: what a port is, which links the
// catalog allows, cycles, colours. The catalog (GET /api/nodes) states every rule; nothing here
// guesses from type or param names.

import type { Catalog, ParamSpec, PortSpec } from "./types";

export interface LinkEnds {
  source: string;
  sourceHandle?: string | null;
  target: string;
  targetHandle?: string | null;
}

interface NodeLike {
  id: string;
  data: { type: string };
}

/** The port (input or param fed by a link) or output named `handle` of a node type. */
export function portSpec(
  catalog: Catalog,
  nodeType: string | undefined,
  handle: string | null | undefined,
  kind: "source" | "target",
): PortSpec | ParamSpec | undefined {
  const spec = nodeType ? catalog[nodeType] : undefined;
  if (!spec || !handle) return undefined;
  if (kind === "source") return spec.outputs.find((p) => p.name === handle);
  return spec.inputs.find((p) => p.name === handle) ?? spec.params.find((p) => p.name === handle);
}

export function portType(catalog: Catalog, nodeType: string | undefined, handle: string | null | undefined, kind: "source" | "target") {
  return portSpec(catalog, nodeType, handle, kind)?.type;
}

/** True when a value of type `source` may be linked into `target`, as the catalog says. */
export function accepts(target: { type: string; accepts?: string[] | null }, source: string): boolean {
  // an older server without `accepts`: only the same type or ANY
  const allowed = target.accepts ?? (target.type === "ANY" ? ["*"] : [target.type]);
  return allowed.includes("*") || allowed.includes(source);
}

/** True when `from` already reaches `to` along the links (so `to` -> `from` would close a cycle). */
export function reaches(edges: readonly LinkEnds[], from: string, to: string): boolean {
  const outgoing = new Map<string, string[]>();
  for (const e of edges) outgoing.set(e.source, [...(outgoing.get(e.source) ?? []), e.target]);
  const stack = [from];
  const seen = new Set<string>();
  while (stack.length) {
    const id = stack.pop()!;
    if (id === to) return true;
    if (seen.has(id)) continue;
    seen.add(id);
    stack.push(...(outgoing.get(id) ?? []));
  }
  return false;
}

/** Why the link may not be made (words for the user), or null when it may. */
export function whyRefused(catalog: Catalog, nodes: readonly NodeLike[], edges: readonly LinkEnds[], link: LinkEnds): string | null {
  if (link.source === link.target) return "a node cannot feed itself";
  const typeOf = (id: string) => nodes.find((n) => n.id === id)?.data.type;
  const from = portType(catalog, typeOf(link.source), link.sourceHandle, "source");
  const to = portSpec(catalog, typeOf(link.target), link.targetHandle, "target");
  if (from && to && !accepts(to, from)) {
    const allowed = (to.accepts ?? [to.type]).join(" or ");
    return `${from} cannot feed ${to.type} (${link.targetHandle} takes ${allowed})`;
  }
  if (reaches(edges, link.target, link.source)) return "the link would make a cycle";
  return null;
}

/** Node types (and their port) that can take the other end of a link dropped on empty canvas. */
export function compatibleNodes(
  catalog: Catalog,
  type: string,
  /** "source": the dragged end is an output of `type`; "target": an input that takes `type` */
  side: "source" | "target",
  accepted: string[] = [type],
): { nodeType: string; handle: string }[] {
  const found: { nodeType: string; handle: string }[] = [];
  for (const spec of Object.values(catalog)) {
    if (side === "source") {
      const port = [...spec.inputs, ...spec.params].find((p) => accepts(p, type) && !(p.accepts ?? []).includes("*"));
      if (port) found.push({ nodeType: spec.type, handle: port.name });
    } else {
      const out = spec.outputs.find((p) => accepted.includes("*") || accepted.includes(p.type));
      if (out) found.push({ nodeType: spec.type, handle: out.name });
    }
  }
  return found.sort((a, b) => a.nodeType.localeCompare(b.nodeType));
}

/** Each type's colour as the catalog gives it. */
export function typeColours(catalog: Catalog): Map<string, string> {
  const colours = new Map<string, string>();
  for (const spec of Object.values(catalog)) {
    for (const port of [...spec.inputs, ...spec.params, ...spec.outputs]) {
      if (port.colour && !colours.has(port.type)) colours.set(port.type, port.colour);
    }
  }
  return colours;
}

export const UNKNOWN_COLOUR = "#dddddd";
