// The working graph kept in this browser across reloads, and the warning before leaving unsaved work.

import { useEffect } from "react";
import type { WorkflowDocument } from "./types";

const WORKING_KEY = "diffgraph:working-graph";

/** The graph the last session left, and whether it had unsaved work; null on a first visit. */
export function readWorkingGraph(): { document: WorkflowDocument; unsaved: boolean } | null {
  try {
    const raw = localStorage.getItem(WORKING_KEY);
    const parsed = raw ? (JSON.parse(raw) as { document?: WorkflowDocument; unsaved?: boolean }) : null;
    if (!parsed?.document || typeof parsed.document !== "object") return null;
    return { document: parsed.document, unsaved: parsed.unsaved === true };
  } catch {
    return null;
  }
}

/** Saves the document (debounced) whenever `revision` changes; warns before unloading while `unsaved`. */
export function useWorkingGraph(enabled: boolean, revision: number, unsaved: boolean, current: () => WorkflowDocument): void {
  useEffect(() => {
    if (!enabled) return;
    const timer = setTimeout(() => {
      try {
        localStorage.setItem(WORKING_KEY, JSON.stringify({ document: current(), unsaved }));
        document.body.dataset.persisted = String(revision);
      } catch {
        // storage full or disabled: the warning before leaving still protects the work
      }
    }, 300);
    return () => clearTimeout(timer);
  }, [enabled, revision, unsaved, current]);

  useEffect(() => {
    document.body.dataset.unsaved = String(unsaved);
    if (!unsaved) return;
    const warn = (e: BeforeUnloadEvent) => {
      e.preventDefault();
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [unsaved]);
}
