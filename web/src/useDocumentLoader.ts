// Opening a document (a file, a template, a library entry, a run's record) on the canvas, with the
// viewport placed before the first paint so a big graph renders once, at the right detail.

import { useReactFlow } from "@xyflow/react";
import { useCallback, type Dispatch } from "react";
import { workflowToGraph, type DgEdge, type DgNode, type Graph } from "./convert";
import type { Action } from "./document";
import { estimateHeight, NODE_WIDTH } from "./layout";
import type { EditorStores } from "./nodeStatus";
import type { Catalog, WorkflowDocument } from "./types";

export interface LoadOptions {
  /** keep the undo history (undo brings back the graph before); default true */
  keepHistory?: boolean;
  /** fit the view to the graph; default true */
  fit?: boolean;
  /** the document has unsaved work (a working graph restored after a reload) */
  unsaved?: boolean;
  /** no "Opened ..." message */
  quiet?: boolean;
}

/** How the view is fitted to a graph: on opening it, after an auto-layout, and the toolbar's Fit. */
export const FIT_VIEW = { padding: 0.1, maxZoom: 1 };

export type LoadDocument = (document: WorkflowDocument, source: string, opts?: LoadOptions) => void;

export function useDocumentLoader(catalog: Catalog, stores: EditorStores, dispatch: Dispatch<Action>, say: (text: string, error?: boolean) => void): LoadDocument {
  const flow = useReactFlow<DgNode, DgEdge>();
  return useCallback(
    (document_, source, opts = {}) => {
      if (typeof document_ !== "object" || document_ === null || Array.isArray(document_)) {
        say(`${source}: a workflow is a mapping (format, nodes, ...)`, true);
        return;
      }
      let graph: Graph;
      try {
        graph = workflowToGraph(document_, catalog);
      } catch (error) {
        say(`${source} cannot be drawn: ${(error as Error).message}`, true);
        return;
      }
      performance.mark("diffgraph:document");
      stores.status.clear("all");
      dispatch({ type: "load", graph, keepHistory: opts.keepHistory, unsaved: opts.unsaved });
      if (opts.fit !== false && graph.nodes.length > 0) {
        const canvas = document.querySelector(".canvas")?.getBoundingClientRect();
        if (canvas) flow.setViewport(fittingViewport(graph, catalog, canvas));
        // (an empty graph is not fitted: React Flow would keep the request and zoom on the first node added)
        requestAnimationFrame(() => flow.fitView(FIT_VIEW));
      }
      if (!opts.quiet) say(`Opened ${source}.`);
    },
    [catalog, dispatch, flow, say, stores],
  );
}

/** The viewport that shows the whole graph, from the nodes' estimated sizes (before they are measured). */
function fittingViewport(graph: Graph, catalog: Catalog, canvas: DOMRect) {
  let [left, top, right, bottom] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of graph.nodes) {
    left = Math.min(left, n.position.x);
    top = Math.min(top, n.position.y);
    right = Math.max(right, n.position.x + NODE_WIDTH);
    bottom = Math.max(bottom, n.position.y + estimateHeight(n.data.type, n.data.params, catalog));
  }
  const [width, height] = [right - left, bottom - top];
  const zoom = Math.max(0.05, Math.min(1, (0.9 * canvas.width) / width, (0.9 * canvas.height) / height));
  return { x: (canvas.width - width * zoom) / 2 - left * zoom, y: (canvas.height - height * zoom) / 2 - top * zoom, zoom };
}
