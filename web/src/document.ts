// The document being edited and every edit to it, as a pure reducer: (state, action) -> state.
// Undo/redo keep whole snapshots (nodes and edges are immutable arrays, so a snapshot is cheap).

import { applyEdgeChanges, applyNodeChanges, type Connection, type EdgeChange, type Node, type NodeChange } from "@xyflow/react";
import { edgeId, freshId, type DgEdge, type DgNode, type Graph } from "./convert";
import type { Catalog, TemplateParam, WorkflowDocument } from "./types";

export interface Doc {
  base: WorkflowDocument;
  nodes: DgNode[];
  edges: DgEdge[];
}

export interface EditorState {
  doc: Doc;
  past: Doc[];
  future: Doc[];
  /** the last coalescing edit (typing into one field is one undo step) */
  lastEdit: { key: string; at: number } | null;
  /** bumps on every change of what the document means (not on moves or selection): revalidate */
  revision: number;
  /** bumps on every change that the saved document shows (moves included): persist */
  saved: number;
  /** `saved` when the document last matched a file, template or library entry (no unsaved work) */
  cleanAt: number;
  /** the groups (frames) selected on the canvas: the Delete key removes them with the selected nodes */
  selectedGroups: string[];
}

/** A seed the seed control advances after each run: a node param or a template param's default. */
export type SeedTarget = { node: string; name: string; max: number } | { template: string; max: number };

export const HISTORY_LIMIT = 100;
const COALESCE_MS = 1500;

export type Action =
  | { type: "load"; graph: Graph; keepHistory?: boolean; unsaved?: boolean }
  | { type: "markClean" }
  | { type: "advanceSeeds"; control: "fixed" | "increment" | "randomize"; targets: SeedTarget[]; random: number }
  | { type: "add"; nodeType: string; position: { x: number; y: number }; id?: string }
  | { type: "connect"; link: Connection; linkType?: string }
  | { type: "setParam"; node: string; name: string; value: unknown; at: number }
  | { type: "setNodeFlag"; ids: string[]; flag: NodeFlag; value: boolean }
  | { type: "rename"; from: string; to: string }
  | { type: "paste"; nodes: DgNode[]; edges: DgEdge[]; offset?: number }
  | { type: "nodesChange"; changes: NodeChange<DgNode>[] }
  | { type: "edgesChange"; changes: EdgeChange<DgEdge>[] }
  | { type: "setTemplateParam"; name: string; patch: Partial<TemplateParam>; at: number }
  | { type: "setName"; name: string; at: number }
  | { type: "layout"; positions: Record<string, { x: number; y: number }> }
  | { type: "group"; ids: string[]; title: string; sizes: Record<string, { width: number; height: number }> }
  | { type: "groupChange"; changes: NodeChange[] }
  | { type: "renameGroup"; id: string; title: string }
  | { type: "checkpoint" }
  | { type: "undo" }
  | { type: "redo" };

/** A titled frame around nodes (kept in the document's `metadata.groups`; the engine ignores it).
 * Dragging it moves the nodes inside it. */
export interface Group {
  id: string;
  title: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export const GROUP_PREFIX = "group/"; // "/" is never in a node id: frames and nodes cannot clash

export function groupsOf(base: WorkflowDocument): Group[] {
  const groups = (base.metadata as { groups?: unknown } | undefined)?.groups;
  return Array.isArray(groups) ? (groups.filter((g) => g && typeof g === "object" && typeof g.id === "string") as Group[]) : [];
}

/** The frames React Flow draws for the groups, behind the nodes: selectable (a click on the title)
 * and deletable (the Delete key removes the selected ones, their nodes stay). */
export function groupFrames(base: WorkflowDocument, selectedGroups: string[]): GroupFrame[] {
  return groupsOf(base).map((g) => ({
    id: `${GROUP_PREFIX}${g.id}`,
    type: "frame",
    position: { x: g.x, y: g.y },
    data: { title: g.title, groupId: g.id },
    style: { width: g.width, height: g.height },
    width: g.width,
    height: g.height,
    zIndex: -1,
    selected: selectedGroups.includes(g.id),
    selectable: true,
    deletable: true,
    dragHandle: ".frame-title",
  }));
}

/** A group as React Flow's node of type "frame" (FrameNode draws it). */
export type GroupFrame = Node<{ title: string; groupId: string }, "frame">;

function withGroups(base: WorkflowDocument, groups: Group[]): WorkflowDocument {
  const metadata = { ...((base.metadata as Record<string, unknown> | undefined) ?? {}) };
  if (groups.length > 0) metadata.groups = groups;
  else delete metadata.groups;
  const next: WorkflowDocument = { ...base, metadata };
  if (Object.keys(metadata).length === 0) delete next.metadata;
  return next;
}

const inside = (p: { x: number; y: number }, g: Group) => p.x >= g.x && p.x <= g.x + g.width && p.y >= g.y && p.y <= g.y + g.height;

/** Per-node editor flags kept in the node's `metadata` (the engine ignores it). */
export type NodeFlag = "collapsed" | "muted" | "bypassed";

export function initialState(graph: Graph): EditorState {
  return { doc: { base: graph.base, nodes: graph.nodes, edges: graph.edges }, past: [], future: [], lastEdit: null, revision: 0, saved: 0, cleanAt: 0, selectedGroups: [] };
}

/** Push the present onto the undo stack (unless it is a coalesced continuation of the last edit). */
function remember(state: EditorState, coalesce?: { key: string; at: number }): EditorState {
  const last = state.lastEdit;
  if (coalesce && last && last.key === coalesce.key && coalesce.at - last.at < COALESCE_MS) {
    return { ...state, lastEdit: coalesce };
  }
  const top = state.past[state.past.length - 1];
  const same = top && top.base === state.doc.base && top.nodes === state.doc.nodes && top.edges === state.doc.edges;
  const past = same ? state.past : [...state.past, state.doc].slice(-HISTORY_LIMIT);
  return { ...state, past, future: [], lastEdit: coalesce ?? null };
}

function edit(state: EditorState, doc: Partial<Doc>, opts: { meaning?: boolean; coalesce?: { key: string; at: number } } = {}): EditorState {
  const before = remember(state, opts.coalesce);
  return {
    ...before,
    doc: { ...before.doc, ...doc },
    revision: before.revision + (opts.meaning === false ? 0 : 1),
    saved: before.saved + 1,
  };
}

export function renameProblem(doc: Doc, from: string, raw: string): string | null {
  const to = raw.trim();
  if (to === from) return null;
  if (!to || /[./$\s]/.test(to)) return "an id is not empty and has no '.', '/', '$' or spaces";
  if (doc.nodes.some((n) => n.id === to)) return `there is already a node ${to}`;
  return null;
}

function newNode(id: string, nodeType: string, position: { x: number; y: number }): DgNode {
  return {
    id,
    type: "dg",
    position,
    selected: true,
    data: { type: nodeType, params: {}, keyOrder: [], extra: {}, inputOrder: [], dangling: {} },
  };
}

const unselected = (nodes: DgNode[]) => nodes.map((n) => (n.selected ? { ...n, selected: false } : n));

export function editorReducer(state: EditorState, action: Action): EditorState {
  const { doc } = state;
  switch (action.type) {
    case "load": {
      const next = { base: action.graph.base, nodes: action.graph.nodes, edges: action.graph.edges };
      const keep = action.keepHistory !== false && doc.nodes.length > 0;
      const past = keep ? [...state.past, doc].slice(-HISTORY_LIMIT) : [];
      const saved = state.saved + 1;
      return { doc: next, past, future: [], lastEdit: null, revision: state.revision + 1, saved, cleanAt: action.unsaved ? -1 : saved, selectedGroups: [] };
    }
    case "markClean":
      return { ...state, cleanAt: state.saved };
    case "advanceSeeds": {
      if (action.control === "fixed" || action.targets.length === 0) return state;
      let random = action.random >>> 0;
      const next = (current: unknown, max: number) => {
        if (action.control === "increment") return typeof current === "number" && current < max ? current + 1 : 0;
        random = (Math.imul(random, 1664525) + 1013904223) >>> 0; // one distinct value per seed
        return random % (Math.min(max, 2 ** 32 - 1) + 1);
      };
      let nodes = doc.nodes;
      let base = doc.base;
      for (const target of action.targets) {
        if ("node" in target) {
          nodes = nodes.map((n) =>
            n.id === target.node ? { ...n, data: { ...n.data, params: { ...n.data.params, [target.name]: next(n.data.params[target.name], target.max) } } } : n,
          );
        } else {
          const declared = base.params?.[target.template];
          if (!declared) continue;
          base = { ...base, params: { ...base.params, [target.template]: { ...declared, default: next(declared.default, target.max) } } };
        }
      }
      return edit(state, { nodes, base });
    }
    case "add": {
      const id = action.id ?? freshId(action.nodeType, new Set(doc.nodes.map((n) => n.id)));
      return edit(state, { nodes: [...unselected(doc.nodes), newNode(id, action.nodeType, action.position)] });
    }
    case "connect": {
      const c = action.link;
      // an input takes one link: a new one replaces the old
      const edges = [
        ...doc.edges.filter((e) => !(e.target === c.target && e.targetHandle === c.targetHandle)),
        {
          id: edgeId(c.source, c.sourceHandle ?? "", c.target, c.targetHandle ?? ""),
          type: "typed",
          source: c.source,
          sourceHandle: c.sourceHandle,
          target: c.target,
          targetHandle: c.targetHandle,
          data: { type: action.linkType },
        },
      ];
      return edit(state, { edges });
    }
    case "setParam": {
      const nodes = doc.nodes.map((n) =>
        n.id === action.node ? { ...n, data: { ...n.data, params: { ...n.data.params, [action.name]: action.value } } } : n,
      );
      return edit(state, { nodes }, { coalesce: { key: `param:${action.node}:${action.name}`, at: action.at } });
    }
    case "setNodeFlag": {
      const ids = new Set(action.ids);
      const nodes = doc.nodes.map((n) => {
        if (!ids.has(n.id)) return n;
        const metadata = { ...(n.data.metadata ?? {}) };
        if (action.value) metadata[action.flag] = true;
        else delete metadata[action.flag];
        // a node is muted or bypassed, not both
        if (action.value && action.flag === "muted") delete metadata.bypassed;
        if (action.value && action.flag === "bypassed") delete metadata.muted;
        return { ...n, data: { ...n.data, metadata } };
      });
      return edit(state, { nodes }, { meaning: false });
    }
    case "rename": {
      const to = action.to.trim();
      if (to === action.from || renameProblem(doc, action.from, to)) return state;
      const renamed = (id: string) => (id === action.from ? to : id);
      const nodes = doc.nodes.map((n) => (n.id === action.from ? { ...n, id: to } : n));
      const edges = doc.edges.map((e) => {
        if (e.source !== action.from && e.target !== action.from) return e;
        const [source, target] = [renamed(e.source), renamed(e.target)];
        return { ...e, source, target, id: edgeId(source, e.sourceHandle ?? "", target, e.targetHandle ?? "") };
      });
      // the workflow's `outputs:` name nodes too
      let base = doc.base;
      if (base.outputs && typeof base.outputs === "object") {
        const outputs = Object.fromEntries(
          Object.entries(base.outputs).map(([k, v]) => [
            k,
            typeof v === "string" && v.startsWith(`${action.from}.`) ? `${to}${v.slice(action.from.length)}` : v,
          ]),
        );
        base = { ...base, outputs };
      }
      return edit(state, { nodes, edges, base });
    }
    case "paste": {
      const taken = new Set(doc.nodes.map((n) => n.id));
      const renamed = new Map<string, string>();
      for (const node of action.nodes) {
        const id = freshId(node.id.replace(/_\d+$/, ""), taken);
        taken.add(id);
        renamed.set(node.id, id);
      }
      const offset = action.offset ?? 40;
      const pasted: DgNode[] = action.nodes.map((n) => ({
        ...n,
        id: renamed.get(n.id)!,
        selected: true,
        position: { x: n.position.x + offset, y: n.position.y + offset },
        data: structuredClone(n.data),
      }));
      const links: DgEdge[] = action.edges
        .filter((e) => renamed.has(e.source) && renamed.has(e.target))
        .map((e) => {
          const source = renamed.get(e.source)!;
          const target = renamed.get(e.target)!;
          return { ...e, id: edgeId(source, e.sourceHandle ?? "", target, e.targetHandle ?? ""), source, target, selected: false };
        });
      return edit(state, { nodes: [...unselected(doc.nodes), ...pasted], edges: [...doc.edges, ...links] });
    }
    case "nodesChange": {
      const nodes = applyNodeChanges(action.changes, doc.nodes);
      if (action.changes.some((c) => c.type === "remove")) {
        // removing a node removes its links in the same undo step
        const ids = new Set(nodes.map((n) => n.id));
        const edges = doc.edges.filter((e) => ids.has(e.source) && ids.has(e.target));
        return edit(state, { nodes, edges });
      }
      const moved = action.changes.some((c) => c.type === "position" && !c.dragging);
      // selection, measuring and drag frames are not edits; the end of a drag is saved
      return { ...state, doc: { ...doc, nodes }, saved: state.saved + (moved ? 1 : 0) };
    }
    case "edgesChange": {
      const edges = applyEdgeChanges(action.changes, doc.edges);
      if (action.changes.some((c) => c.type === "remove")) return edit(state, { edges });
      return { ...state, doc: { ...doc, edges } };
    }
    case "setTemplateParam": {
      const params = doc.base.params ?? {};
      const base = { ...doc.base, params: { ...params, [action.name]: { ...(params[action.name] as TemplateParam), ...action.patch } } };
      return edit(state, { base }, { coalesce: { key: `template:${action.name}`, at: action.at } });
    }
    case "setName":
      return edit(state, { base: { ...doc.base, name: action.name } }, { meaning: false, coalesce: { key: "workflow-name", at: action.at } });
    case "layout": {
      const nodes = doc.nodes.map((n) => (action.positions[n.id] ? { ...n, position: action.positions[n.id] } : n));
      return edit(state, { nodes }, { meaning: false });
    }
    case "group": {
      const chosen = doc.nodes.filter((n) => action.ids.includes(n.id));
      if (chosen.length === 0) return state;
      const pad = 30;
      const size = (id: string) => action.sizes[id] ?? { width: 280, height: 160 };
      const left = Math.min(...chosen.map((n) => n.position.x)) - pad;
      const top = Math.min(...chosen.map((n) => n.position.y)) - pad - 20;
      const right = Math.max(...chosen.map((n) => n.position.x + size(n.id).width)) + pad;
      const bottom = Math.max(...chosen.map((n) => n.position.y + size(n.id).height)) + pad;
      const groups = groupsOf(doc.base);
      let k = groups.length + 1;
      while (groups.some((g) => g.id === `g${k}`)) k++;
      const group: Group = { id: `g${k}`, title: action.title, x: Math.round(left), y: Math.round(top), width: Math.round(right - left), height: Math.round(bottom - top) };
      return edit(state, { base: withGroups(doc.base, [...groups, group]) }, { meaning: false });
    }
    case "renameGroup": {
      const groups = groupsOf(doc.base).map((g) => (g.id === action.id ? { ...g, title: action.title } : g));
      return edit(state, { base: withGroups(doc.base, groups) }, { meaning: false, coalesce: { key: `group:${action.id}`, at: Date.now() } });
    }
    case "groupChange": {
      const original = groupsOf(doc.base);
      let groups = original;
      let nodes = doc.nodes;
      let selectedGroups = state.selectedGroups;
      let removed = false;
      let finished = false;
      for (const change of action.changes) {
        if (!("id" in change) || !change.id.startsWith(GROUP_PREFIX)) continue;
        const id = change.id.slice(GROUP_PREFIX.length);
        const group = groups.find((g) => g.id === id);
        if (!group) continue;
        if (change.type === "select") {
          // selection is not an edit: no undo step, nothing to save
          selectedGroups = change.selected ? [...selectedGroups.filter((g) => g !== id), id] : selectedGroups.filter((g) => g !== id);
        } else if (change.type === "remove") {
          groups = groups.filter((g) => g.id !== id);
          selectedGroups = selectedGroups.filter((g) => g !== id);
          removed = true;
        } else if (change.type === "position" && change.position) {
          const [dx, dy] = [change.position.x - group.x, change.position.y - group.y];
          // the nodes inside the frame move with it
          nodes = nodes.map((n) => (inside(n.position, group) ? { ...n, position: { x: n.position.x + dx, y: n.position.y + dy } } : n));
          groups = groups.map((g) => (g.id === id ? { ...g, x: change.position!.x, y: change.position!.y } : g));
          if (!change.dragging) finished = true;
        } else if (change.type === "dimensions" && change.dimensions && change.resizing !== undefined) {
          groups = groups.map((g) => (g.id === id ? { ...g, width: change.dimensions!.width, height: change.dimensions!.height } : g));
          if (!change.resizing) finished = true;
        }
      }
      if (removed) return { ...edit(state, { ...doc, base: withGroups(doc.base, groups), nodes }, { meaning: false }), selectedGroups };
      const moved = nodes !== doc.nodes || groups !== original;
      if (!moved) return selectedGroups === state.selectedGroups ? state : { ...state, selectedGroups };
      // drag frames are not edits (the drag start was a checkpoint); the end of one is saved
      const next = { ...doc, base: withGroups(doc.base, groups), nodes };
      return { ...state, doc: next, selectedGroups, saved: state.saved + (finished ? 1 : 0) };
    }
    case "checkpoint":
      return remember(state);
    case "undo": {
      const previous = state.past[state.past.length - 1];
      if (!previous) return state;
      return {
        ...state,
        doc: previous,
        past: state.past.slice(0, -1),
        future: [...state.future, doc],
        lastEdit: null,
        revision: state.revision + 1,
        saved: state.saved + 1,
      };
    }
    case "redo": {
      const next = state.future[state.future.length - 1];
      if (!next) return state;
      return {
        ...state,
        doc: next,
        past: [...state.past, doc],
        future: state.future.slice(0, -1),
        lastEdit: null,
        revision: state.revision + 1,
        saved: state.saved + 1,
      };
    }
  }
}

/** The selected nodes and the links between them: what Ctrl+C copies. */
export function selection(doc: Doc): { nodes: DgNode[]; edges: DgEdge[] } {
  const nodes = doc.nodes.filter((n) => n.selected);
  const ids = new Set(nodes.map((n) => n.id));
  return { nodes, edges: doc.edges.filter((e) => ids.has(e.source) && ids.has(e.target)) };
}

/** The seeds the seed control advances: seed-widget params set as plain numbers, and the template
 * params such params refer to. Linked params and `$refs` to non-seed params are left alone. */
export function seedTargets(doc: Doc, catalog: Catalog): SeedTarget[] {
  const targets: SeedTarget[] = [];
  const templates = new Set<string>();
  const linked = new Set(doc.edges.map((e) => `${e.target}\u0000${e.targetHandle}`));
  for (const node of doc.nodes) {
    for (const param of catalog[node.data.type]?.params ?? []) {
      if (param.widget !== "seed" || linked.has(`${node.id}\u0000${param.name}`)) continue;
      const max = param.max ?? 2 ** 32 - 1;
      const value = param.name in node.data.params ? node.data.params[param.name] : param.default;
      if (typeof value === "number") targets.push({ node: node.id, name: param.name, max });
      else if (typeof value === "string" && value.startsWith("$") && !value.startsWith("$$") && !templates.has(value.slice(1))) {
        templates.add(value.slice(1));
        if (doc.base.params?.[value.slice(1)]) targets.push({ template: value.slice(1), max });
      }
    }
  }
  return targets;
}
