// The canvas: React Flow with the document's nodes and links, the groups as frames behind them,
// and what floats over it (notifications, the node search). Everything passed to React Flow is
// stable between renders, so panning re-renders no node: only the viewport's transform changes.

import { Background, Controls, MiniMap, ReactFlow, useStore, type EdgeChange, type Node, type NodeChange } from "@xyflow/react";
import { useCallback, useContext, useMemo, type Dispatch, type DragEvent, type ReactNode } from "react";
import type { DgEdge, DgNode } from "./convert";
import { GROUP_PREFIX, groupFrames, type Action, type EditorState } from "./document";
import { colourOf, EditorContext } from "./editorContext";
import { FrameNode } from "./FrameNode";
import { FAR_ZOOM, GraphNode, TypedEdge } from "./GraphNode";
import type { useLinking } from "./useLinking";

const nodeTypes = { dg: GraphNode, frame: FrameNode };
const edgeTypes = { typed: TypedEdge };
const DELETE_KEYS = ["Backspace", "Delete"];
const MULTI_SELECT_KEYS = ["Control", "Meta", "Shift"];
const PRO_OPTIONS = { hideAttribution: true };
const DEFAULT_EDGE_OPTIONS = { type: "typed" };
/** below this zoom the background's dots are a dense haze that costs a repaint of the whole pane
 * on every pan frame: the plain pane colour is drawn instead */
const BACKGROUND_ZOOM = 0.3;
/** from this zoom in, only the nodes and links in view are mounted. Further out nodes are bare boxes
 * and most of the graph is in view: mounting and unmounting those crossing the edge of the view on
 * every pan frame (each mount measures its handles) cost more than keeping them all. */
const CULL_ZOOM = FAR_ZOOM;

const isFrame = (c: NodeChange<DgNode>) => "id" in c && c.id.startsWith(GROUP_PREFIX);

function CanvasBackground() {
  const near = useStore((s) => s.transform[2] >= BACKGROUND_ZOOM);
  return near ? <Background /> : null;
}

export function Canvas({ state, dispatch, linking, onDrop, children }: {
  state: EditorState;
  dispatch: Dispatch<Action>;
  linking: ReturnType<typeof useLinking>;
  onDrop(e: DragEvent): void;
  /** what floats over the canvas */
  children?: ReactNode;
}) {
  const { catalog, colours } = useContext(EditorContext);
  const { base, nodes, edges } = state.doc;
  const cull = useStore((s) => s.transform[2] >= CULL_ZOOM);
  // groups are drawn as frames behind the nodes; they are not workflow nodes
  const frames = useMemo(() => groupFrames(base, state.selectedGroups), [base, state.selectedGroups]);
  const flowNodes = useMemo(() => (frames.length > 0 ? [...(frames as unknown as DgNode[]), ...nodes] : nodes), [frames, nodes]);

  const onNodesChange = useCallback(
    (changes: NodeChange<DgNode>[]) => {
      const frameChanges = changes.filter(isFrame);
      if (frameChanges.length > 0) dispatch({ type: "groupChange", changes: frameChanges as NodeChange[] });
      const rest = frameChanges.length > 0 ? changes.filter((c) => !isFrame(c)) : changes;
      if (rest.length > 0) dispatch({ type: "nodesChange", changes: rest });
    },
    [dispatch],
  );
  const onEdgesChange = useCallback((changes: EdgeChange<DgEdge>[]) => dispatch({ type: "edgesChange", changes }), [dispatch]);
  const onNodeDragStart = useCallback(() => dispatch({ type: "checkpoint" }), [dispatch]);
  const nodeColor = useCallback(
    (n: Node) => (n.type === "frame" ? "#3a3d45" : colourOf(colours, catalog[(n as DgNode).data.type]?.outputs[0]?.type)),
    [catalog, colours],
  );
  const onDragOver = useCallback((e: DragEvent) => e.preventDefault(), []);

  return (
    <div className={cull ? "canvas" : "canvas far"} onDragOver={onDragOver} onDrop={onDrop} onDoubleClick={linking.onPaneDoubleClick}>
      <ReactFlow<DgNode, DgEdge>
        nodes={flowNodes}
        edges={edges}
        nodeTypes={nodeTypes}
        edgeTypes={edgeTypes}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={linking.connect}
        onConnectEnd={linking.onConnectEnd}
        isValidConnection={linking.isValidConnection}
        onNodeDragStart={onNodeDragStart}
        deleteKeyCode={DELETE_KEYS}
        multiSelectionKeyCode={MULTI_SELECT_KEYS}
        zoomOnDoubleClick={false}
        minZoom={0.05}
        maxZoom={2}
        onlyRenderVisibleElements={cull}
        proOptions={PRO_OPTIONS}
        defaultEdgeOptions={DEFAULT_EDGE_OPTIONS}
      >
        <CanvasBackground />
        <Controls />
        <MiniMap pannable zoomable nodeColor={nodeColor} />
      </ReactFlow>
      {children}
    </div>
  );
}
