// Links on the canvas: the connect checks while dragging (the catalog's rules), the words when a
// link is refused, and the node search offered on a double-click or when a link is dropped on
// empty canvas (only compatible nodes; the chosen one is wired).

import { useReactFlow, type Connection, type FinalConnectionState, type IsValidConnection } from "@xyflow/react";
import { useCallback, useState, type Dispatch, type MouseEvent as ReactMouseEvent } from "react";
import type { DgEdge, DgNode } from "./convert";
import type { Action, Doc } from "./document";
import { compatibleNodes, portSpec, portType, whyRefused } from "./graphRules";
import type { SearchRequest } from "./NodeSearch";
import type { Catalog } from "./types";
import type { AddNode } from "./usePlacement";

export type Search = SearchRequest & { at: { x: number; y: number }; from?: { node: string; handle: string; side: "source" | "target" } };

export function useLinking(options: { catalog: Catalog; doc(): Doc; dispatch: Dispatch<Action>; addNode: AddNode; say(text: string, error?: boolean): void }) {
  const { catalog, doc, dispatch, addNode, say } = options;
  const flow = useReactFlow<DgNode, DgEdge>();
  const [search, setSearch] = useState<Search | null>(null);

  const typeOf = useCallback((id: string) => doc().nodes.find((n) => n.id === id)?.data.type, [doc]);
  const refusal = useCallback((c: Connection | DgEdge) => whyRefused(catalog, doc().nodes, doc().edges, c), [catalog, doc]);
  const isValidConnection: IsValidConnection<DgEdge> = useCallback((c) => refusal(c) === null, [refusal]);

  const connect = useCallback(
    (c: Connection) => {
      if (refusal(c)) return;
      dispatch({ type: "connect", link: c, linkType: portType(catalog, typeOf(c.source), c.sourceHandle, "source") });
    },
    [catalog, dispatch, refusal, typeOf],
  );

  const describePort = useCallback(
    (node: string, handle: string | null | undefined, kind: "source" | "target") => `${node}.${handle} (${portType(catalog, typeOf(node), handle, kind) ?? "?"})`,
    [catalog, typeOf],
  );

  const onConnectEnd = useCallback(
    (event: MouseEvent | TouchEvent, c: FinalConnectionState) => {
      if (c.isValid || !c.fromHandle) return;
      if (!c.toHandle) {
        // dropped on empty canvas: offer the nodes that can take this link, then wire the chosen one
        const target = event.target as HTMLElement | null;
        if (!target?.classList.contains("react-flow__pane")) return;
        const point = "changedTouches" in event ? event.changedTouches[0] : event;
        const side = c.fromHandle.type;
        const spec = portSpec(catalog, typeOf(c.fromHandle.nodeId), c.fromHandle.id, side);
        if (!spec) return;
        const offers = side === "source" ? compatibleNodes(catalog, spec.type, "source") : compatibleNodes(catalog, spec.type, "target", spec.accepts ?? [spec.type]);
        setSearch({
          screen: { x: point.clientX, y: point.clientY },
          at: flow.screenToFlowPosition({ x: point.clientX, y: point.clientY }),
          offers,
          from: { node: c.fromHandle.nodeId, handle: c.fromHandle.id ?? "", side },
        });
        return;
      }
      const from = c.fromHandle.type === "source" ? c.fromHandle : c.toHandle;
      const to = c.fromHandle.type === "source" ? c.toHandle : c.fromHandle;
      const reason = refusal({ source: from.nodeId, sourceHandle: from.id ?? null, target: to.nodeId, targetHandle: to.id ?? null });
      if (reason) say(`Link refused: ${describePort(from.nodeId, from.id, "source")} → ${describePort(to.nodeId, to.id, "target")}: ${reason}.`, true);
    },
    [catalog, describePort, flow, refusal, say, typeOf],
  );

  const chooseFromSearch = useCallback(
    (nodeType: string, handle?: string) => {
      if (!search) return;
      const id = addNode(nodeType, search.at);
      const from = search.from;
      if (from && handle) {
        const link =
          from.side === "source"
            ? { source: from.node, sourceHandle: from.handle, target: id, targetHandle: handle }
            : { source: id, sourceHandle: handle, target: from.node, targetHandle: from.handle };
        const linkType = from.side === "source" ? portType(catalog, typeOf(from.node), from.handle, "source") : catalog[nodeType]?.outputs.find((o) => o.name === handle)?.type;
        dispatch({ type: "connect", link, linkType });
      }
      setSearch(null);
    },
    [addNode, catalog, dispatch, search, typeOf],
  );

  const onPaneDoubleClick = useCallback(
    (e: ReactMouseEvent) => {
      if (!(e.target as HTMLElement).classList.contains("react-flow__pane")) return;
      setSearch({ screen: { x: e.clientX, y: e.clientY }, at: flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }) });
    },
    [flow],
  );

  const closeSearch = useCallback(() => setSearch(null), []);
  return { isValidConnection, connect, onConnectEnd, search, chooseFromSearch, closeSearch, onPaneDoubleClick };
}
