// Left-to-right auto-layout with dagre; node heights estimated from their ports and params.

import dagre from "@dagrejs/dagre";
import type { Edge, Node } from "@xyflow/react";
import type { Catalog } from "./types";

export const NODE_WIDTH = 280;

export function estimateHeight(type: string, params: Record<string, unknown>, catalog?: Catalog): number {
  const spec = catalog?.[type];
  const rows = spec
    ? Math.max(spec.inputs.length, spec.outputs.length) + spec.params.length
    : Math.max(1, Object.keys(params).length + 1);
  const multiline = spec ? spec.params.filter((p) => p.multiline).length : 0;
  return 48 + rows * 30 + multiline * 40;
}

export function layoutPositions(
  nodes: Node<{ type: string; params: Record<string, unknown> }>[],
  edges: Edge[],
  catalog?: Catalog,
): Record<string, { x: number; y: number }> {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "LR", nodesep: 40, ranksep: 90, marginx: 20, marginy: 20 });
  graph.setDefaultEdgeLabel(() => ({}));
  const sizes: Record<string, { width: number; height: number }> = {};
  for (const node of nodes) {
    const width = node.measured?.width ?? NODE_WIDTH;
    const height = node.measured?.height ?? estimateHeight(node.data.type, node.data.params, catalog);
    sizes[node.id] = { width, height };
    graph.setNode(node.id, { width, height });
  }
  for (const edge of edges) {
    if (graph.hasNode(edge.source) && graph.hasNode(edge.target)) graph.setEdge(edge.source, edge.target);
  }
  dagre.layout(graph);
  const positions: Record<string, { x: number; y: number }> = {};
  for (const node of nodes) {
    const placed = graph.node(node.id);
    const { width, height } = sizes[node.id];
    positions[node.id] = { x: Math.round(placed.x - width / 2), y: Math.round(placed.y - height / 2) };
  }
  return positions;
}
