// Validation while editing: the server checks the document a moment after each change, and its
// errors show on the nodes (and fields) they name before anything runs.

import { useCallback, useEffect, useState } from "react";
import * as api from "./api";
import type { Doc } from "./document";
import { canvasNodeId, type EditorStores } from "./nodeStatus";
import type { Catalog, Issue, WorkflowDocument } from "./types";

const DEBOUNCE_MS = 400;

export function useValidation(options: {
  stores: EditorStores;
  doc(): Doc;
  currentDocument(): WorkflowDocument;
  /** the document's revision: bumps when what it means changes */
  revision: number;
  catalog: Catalog;
  fail(error: unknown): void;
}) {
  const { stores, doc, currentDocument, revision, catalog, fail } = options;
  /** issues that name no node on the canvas: shown in the notifications */
  const [workflowIssues, setWorkflowIssues] = useState<Issue[]>([]);

  const showIssues = useCallback(
    (issues: Issue[]) => {
      stores.status.clear("issues");
      const byNode = new Map<string, Issue[]>();
      const general: Issue[] = [];
      const ids = new Set(doc().nodes.map((n) => n.id));
      for (const issue of issues) {
        const id = issue.node ? canvasNodeId(issue.node) : null;
        if (id && ids.has(id)) byNode.set(id, [...(byNode.get(id) ?? []), issue]);
        else general.push(issue);
      }
      for (const [id, list] of byNode) stores.status.update(id, { issues: list });
      setWorkflowIssues(general);
    },
    [doc, stores],
  );

  useEffect(() => {
    if (revision === 0 || Object.keys(catalog).length === 0) return;
    const timer = setTimeout(async () => {
      try {
        const result = await api.validateWorkflow(currentDocument());
        showIssues(result.errors);
        // loaders show their model's family; an invalid workflow keeps the last ones known
        if (result.valid) for (const node of doc().nodes) {
          if (stores.status.get(node.id).family !== result.families[node.id]) stores.status.update(node.id, { family: result.families[node.id] });
        }
      } catch (error) {
        fail(error);
      }
    }, DEBOUNCE_MS);
    return () => clearTimeout(timer);
  }, [revision, catalog, currentDocument, showIssues, fail, doc, stores]);

  return { workflowIssues, showIssues };
}
