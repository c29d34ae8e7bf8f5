// Live per-node status (run state, validation issues, images) kept outside React Flow's node data,
// so a progress event re-renders only the node it is about, not all 500.

import { createContext, useContext, useSyncExternalStore } from "react";
import type { Issue } from "./types";

export type RunState = "queued" | "running" | "cached" | "done" | "failed" | "cancelled";

export interface NodeStatus {
  state?: RunState;
  step?: number;
  total?: number;
  error?: string;
  /** validation issues from the server, each naming a field */
  issues: Issue[];
  /** output images of this node (URLs) */
  images: string[];
  /** the latest sampling preview (an object URL) */
  preview?: string;
  /** seconds the node took in the last run (from node_finished) */
  seconds?: number;
  /** a named stage of the node's work that is not a sampling step (`compile`, `compiled`, `eager`:
   * torch.compile of the denoiser under the run's compile option), its words and when it began */
  stage?: { name: string; message: string; since: number };
  /** a loader's model family, from the model's own files (POST /api/validate's `families`) */
  family?: string;
}

const EMPTY: NodeStatus = { issues: [], images: [] };

export class StatusStore {
  private statuses = new Map<string, NodeStatus>();
  private listeners = new Map<string, Set<() => void>>();

  get(id: string): NodeStatus {
    return this.statuses.get(id) ?? EMPTY;
  }

  update(id: string, patch: Partial<NodeStatus>): void {
    const previous = this.get(id);
    if (patch.preview && previous.preview && patch.preview !== previous.preview) URL.revokeObjectURL(previous.preview);
    this.statuses.set(id, { ...previous, ...patch });
    this.listeners.get(id)?.forEach((listener) => listener());
  }

  /** Reset one aspect (run state or issues) on every node. */
  clear(what: "run" | "issues" | "all"): void {
    for (const [id, status] of [...this.statuses]) {
      const next: NodeStatus =
        what === "issues"
          ? { ...status, issues: [] }
          : what === "run"
            ? { issues: status.issues, images: status.images, family: status.family }
            : EMPTY;
      if (status.preview && what !== "issues") URL.revokeObjectURL(status.preview);
      this.statuses.set(id, next);
      this.listeners.get(id)?.forEach((listener) => listener());
    }
  }

  ids(): string[] {
    return [...this.statuses.keys()];
  }

  subscribe(id: string, listener: () => void): () => void {
    const set = this.listeners.get(id) ?? new Set();
    set.add(listener);
    this.listeners.set(id, set);
    return () => set.delete(listener);
  }
}

export function useNodeStatus(id: string): NodeStatus {
  const { status } = useContext(StoresContext);
  return useSyncExternalStore(
    (listener) => status.subscribe(id, listener),
    () => status.get(id),
  );
}

/** Events name inner nodes of a subgraph "outer/inner"; the canvas shows them on "outer". */
export function canvasNodeId(id: string): string {
  const slash = id.indexOf("/");
  return slash < 0 ? id : id.slice(0, slash);
}

/** Which handles of each node are linked, derived from the edges once per change (not per node per frame). */
export interface NodeLinks {
  targets: string[];
  sources: string[];
}

const NO_LINKS: NodeLinks = { targets: [], sources: [] };

export class LinkStore {
  private links = new Map<string, NodeLinks>();
  private keys = new Map<string, string>();
  private listeners = new Map<string, Set<() => void>>();

  get(id: string): NodeLinks {
    return this.links.get(id) ?? NO_LINKS;
  }

  setEdges(edges: { source: string; target: string; sourceHandle?: string | null; targetHandle?: string | null }[]): void {
    const next = new Map<string, NodeLinks>();
    const entry = (id: string) => {
      let links = next.get(id);
      if (!links) next.set(id, (links = { targets: [], sources: [] }));
      return links;
    };
    for (const e of edges) {
      entry(e.target).targets.push(e.targetHandle ?? "");
      entry(e.source).sources.push(e.sourceHandle ?? "");
    }
    for (const id of new Set([...this.links.keys(), ...next.keys()])) {
      const links = next.get(id);
      const key = links ? `${[...links.targets].sort()}|${[...links.sources].sort()}` : "";
      if (key === (this.keys.get(id) ?? "")) continue;
      this.keys.set(id, key);
      if (links) this.links.set(id, links);
      else this.links.delete(id);
      this.listeners.get(id)?.forEach((listener) => listener());
    }
  }

  subscribe(id: string, listener: () => void): () => void {
    const set = this.listeners.get(id) ?? new Set();
    set.add(listener);
    this.listeners.set(id, set);
    return () => set.delete(listener);
  }
}

export function useNodeLinks(id: string): NodeLinks {
  const { links } = useContext(StoresContext);
  return useSyncExternalStore(
    (listener) => links.subscribe(id, listener),
    () => links.get(id),
  );
}

/** The live stores of one editor (two editors on a page never share node states). */
export interface EditorStores {
  status: StatusStore;
  links: LinkStore;
}

export function createStores(): EditorStores {
  return { status: new StatusStore(), links: new LinkStore() };
}

export const StoresContext = createContext<EditorStores>(createStores());
