// Ctrl+S and the toolbar's downloads: the document as a YAML or JSON file.

import { useCallback, type Dispatch } from "react";
import type { Action, Doc } from "./document";
import type { WorkflowDocument } from "./types";

function download(filename: string, text: string, mime: string) {
  const url = URL.createObjectURL(new Blob([text], { type: mime }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function useSaveFiles(doc: () => Doc, currentDocument: () => WorkflowDocument, dispatch: Dispatch<Action>) {
  const saveYaml = useCallback(async () => {
    const { stringify } = await import("yaml");
    download(`${doc().base.name || "workflow"}.yaml`, stringify(currentDocument()), "application/yaml");
    dispatch({ type: "markClean" });
  }, [currentDocument, dispatch, doc]);

  const saveJson = useCallback(() => {
    download(`${doc().base.name || "workflow"}.json`, JSON.stringify(currentDocument(), null, 2) + "\n", "application/json");
    dispatch({ type: "markClean" });
  }, [currentDocument, dispatch, doc]);

  return { saveYaml, saveJson };
}
