// The document being edited: the reducer's state and dispatch, and accessors of the latest
// document for callbacks that must not change on every edit (so the views they reach stay memoized).

import { useCallback, useReducer, useRef } from "react";
import { emptyWorkflow, graphToWorkflow, workflowToGraph, type Graph } from "./convert";
import { editorReducer, initialState, type Doc } from "./document";
import type { WorkflowDocument } from "./types";

export function useEditorDocument() {
  const [state, dispatch] = useReducer(editorReducer, workflowToGraph(emptyWorkflow()), initialState);
  const latest = useRef(state);
  latest.current = state;
  /** the document as it is now (not as it was when a callback was made) */
  const doc = useCallback((): Doc => latest.current.doc, []);
  /** the document now, in the workflow format (what runs, downloads and the library get) */
  const currentDocument = useCallback((): WorkflowDocument => graphToWorkflow(doc() as Graph), [doc]);
  return { state, dispatch, doc, currentDocument };
}
