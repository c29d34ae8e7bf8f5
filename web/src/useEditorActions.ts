// The edits nodes, frames and panels make through EditorContext (params, rename, flags, groups,
// uploads), and the ones the keyboard makes on the selection (mute, bypass, group).

import { useCallback, useMemo, useRef, type Dispatch } from "react";
import * as api from "./api";
import { GROUP_PREFIX, renameProblem, type Action, type Doc, type NodeFlag } from "./document";
import type { EditorActions } from "./editorContext";
import { NODE_WIDTH } from "./layout";
import type { EditorStores } from "./nodeStatus";
import type { Catalog } from "./types";

export function useEditorActions(options: { catalog: Catalog; colours: Map<string, string>; doc(): Doc; dispatch: Dispatch<Action>; stores: EditorStores }) {
  const { catalog, colours, doc, dispatch, stores } = options;
  /** this page's own copies of the pictures it uploaded: shown at once, without a round trip */
  const thumbnails = useRef(new Map<string, string>());

  const upload = useCallback(async (file: File) => {
    const { name } = await api.uploadImage(file);
    thumbnails.current.set(name, URL.createObjectURL(file));
    return name;
  }, []);
  const thumbnail = useCallback((value: string) => thumbnails.current.get(value), []);

  const setParam = useCallback((node: string, name: string, value: unknown) => dispatch({ type: "setParam", node, name, value, at: Date.now() }), [dispatch]);

  const renameNode = useCallback(
    (from: string, to: string): string | null => {
      const why = renameProblem(doc(), from, to);
      if (why) return why;
      if (to.trim() === from) return null;
      dispatch({ type: "rename", from, to });
      stores.status.update(from, { issues: [], state: undefined, images: [] });
      return null;
    },
    [dispatch, doc, stores],
  );

  const toggleFlag = useCallback(
    (id: string, flag: NodeFlag) => {
      const node = doc().nodes.find((n) => n.id === id);
      dispatch({ type: "setNodeFlag", ids: [id], flag, value: node?.data.metadata?.[flag] !== true });
    },
    [dispatch, doc],
  );

  /** Ctrl+M / Ctrl+B: flag every selected node, or clear the flag if all have it. */
  const toggleSelected = useCallback(
    (flag: NodeFlag) => {
      const chosen = doc().nodes.filter((n) => n.selected);
      if (chosen.length === 0) return;
      const value = !chosen.every((n) => n.data.metadata?.[flag] === true);
      dispatch({ type: "setNodeFlag", ids: chosen.map((n) => n.id), flag, value });
    },
    [dispatch, doc],
  );

  /** Ctrl+G: a group framing the selected nodes. */
  const groupSelected = useCallback(() => {
    const chosen = doc().nodes.filter((n) => n.selected);
    if (chosen.length === 0) return;
    const sizes = Object.fromEntries(chosen.map((n) => [n.id, { width: n.measured?.width ?? NODE_WIDTH, height: n.measured?.height ?? 160 }]));
    dispatch({ type: "group", ids: chosen.map((n) => n.id), title: "Group", sizes });
  }, [dispatch, doc]);

  const renameGroup = useCallback((id: string, title: string) => dispatch({ type: "renameGroup", id, title }), [dispatch]);
  const removeGroup = useCallback((id: string) => dispatch({ type: "groupChange", changes: [{ type: "remove", id: `${GROUP_PREFIX}${id}` }] }), [dispatch]);

  // one object for the whole canvas: it changes only with the catalog, so nodes stay memoized
  const actions: EditorActions = useMemo(
    () => ({ catalog, colours, setParam, renameNode, toggleFlag, renameGroup, removeGroup, upload, thumbnail }),
    [catalog, colours, setParam, renameNode, toggleFlag, renameGroup, removeGroup, upload, thumbnail],
  );
  return { actions, toggleSelected, groupSelected };
}
