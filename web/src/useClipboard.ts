// Ctrl+C / Ctrl+V: the selected nodes and the links between them, pasted as fresh copies.

import { useCallback, useRef, type Dispatch } from "react";
import type { DgEdge, DgNode } from "./convert";
import { selection, type Action, type Doc } from "./document";

export function useClipboard(doc: () => Doc, dispatch: Dispatch<Action>, say: (text: string) => void) {
  const clipboard = useRef<{ nodes: DgNode[]; edges: DgEdge[] } | null>(null);

  const copy = useCallback(() => {
    const chosen = selection(doc());
    if (chosen.nodes.length === 0) return;
    clipboard.current = chosen;
    say(`Copied ${chosen.nodes.length} node${chosen.nodes.length > 1 ? "s" : ""}.`);
  }, [doc, say]);

  const paste = useCallback(() => {
    const copied = clipboard.current;
    if (!copied) return;
    dispatch({ type: "paste", ...copied });
    // a second paste lands 40 px further on
    clipboard.current = { nodes: copied.nodes.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } })), edges: copied.edges };
  }, [dispatch]);

  return { copy, paste };
}
