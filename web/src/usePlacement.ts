// Adding a node where the user sees it: at the pointer or a drop point, else the centre of the
// view or the nearest free place in it (never off screen, never on top of another node).

import { useReactFlow } from "@xyflow/react";
import { useCallback, type Dispatch } from "react";
import { freshId, type DgEdge, type DgNode } from "./convert";
import type { Action, Doc } from "./document";
import { NODE_WIDTH } from "./layout";

type Point = { x: number; y: number };
export type AddNode = (type: string, position?: Point, params?: Record<string, unknown>) => string;

export function usePlacement(doc: () => Doc, dispatch: Dispatch<Action>): AddNode {
  const flow = useReactFlow<DgNode, DgEdge>();

  const freePlaceInView = useCallback((): Point => {
    const box = document.querySelector(".canvas")?.getBoundingClientRect() ?? new DOMRect(0, 0, window.innerWidth, window.innerHeight);
    const topLeft = flow.screenToFlowPosition({ x: box.left, y: box.top });
    const bottomRight = flow.screenToFlowPosition({ x: box.right, y: box.bottom });
    const centre = { x: (topLeft.x + bottomRight.x) / 2 - NODE_WIDTH / 2, y: (topLeft.y + bottomRight.y) / 2 - 80 };
    const [width, height] = [NODE_WIDTH + 30, 180];
    const free = (x: number, y: number) =>
      !doc().nodes.some((n) => {
        const h = n.measured?.height ?? 160;
        const w = n.measured?.width ?? NODE_WIDTH;
        return x < n.position.x + w + 10 && n.position.x < x + width && y < n.position.y + h + 10 && n.position.y < y + height;
      });
    if (free(centre.x, centre.y)) return centre;
    const slots: Point[] = [];
    for (let y = topLeft.y + 20; y + height <= bottomRight.y; y += height / 2) {
      for (let x = topLeft.x + 20; x + width <= bottomRight.x; x += width / 2) slots.push({ x, y });
    }
    const distance = (p: Point) => Math.hypot(p.x - centre.x, p.y - centre.y);
    return slots.filter((p) => free(p.x, p.y)).sort((a, b) => distance(a) - distance(b))[0] ?? centre;
  }, [doc, flow]);

  return useCallback(
    (type, position, params) => {
      const id = freshId(type, new Set(doc().nodes.map((n) => n.id)));
      dispatch({ type: "add", nodeType: type, position: position ?? freePlaceInView(), id });
      if (params) for (const [name, value] of Object.entries(params)) dispatch({ type: "setParam", node: id, name, value, at: Date.now() });
      return id;
    },
    [dispatch, doc, freePlaceInView],
  );
}
