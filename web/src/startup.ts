// What the editor fetches before React first renders: the catalog with the templates and the
// document named in the URL.

import * as api from "./api";
import type { Catalog, WorkflowDocument } from "./types";

let requests: {
  catalog: Promise<[Catalog, api.TemplateEntry[] | Error]>;
  document: Promise<[WorkflowDocument, string] | null>;
} | null = null;

/** The requests the editor starts with, sent before React first renders (main.tsx calls this). */
export function prefetch() {
  requests ??= {
    catalog: Promise.all([api.fetchCatalog(), api.fetchTemplates().catch((error: Error) => error)]),
    document: fetchStartupDocument(),
  };
  // handled where they are awaited; this keeps an early failure from being reported as unhandled
  requests.catalog.catch(() => {});
  requests.document.catch(() => {});
  return requests;
}

/** `?library=NAME` or `?template=NAME` in the page's URL opens that workflow. */
async function fetchStartupDocument(): Promise<[WorkflowDocument, string] | null> {
  const query = new URLSearchParams(window.location.search);
  const fromLibrary = query.get("library");
  const fromTemplate = query.get("template");
  if (fromLibrary) return [await api.fetchSaved(fromLibrary), `library workflow ${fromLibrary}`];
  if (fromTemplate) {
    const entry = (await api.fetchTemplates()).find((t) => t.name === fromTemplate);
    if (!entry) throw new Error(`There is no template named ${fromTemplate}.`);
    return [templateDocument(entry), `template ${fromTemplate}`];
  }
  return null;
}

export function templateDocument(entry: api.TemplateEntry): WorkflowDocument {
  const found = entry.workflow ?? entry.document ?? (entry.nodes ? (entry as unknown as WorkflowDocument) : null);
  if (!found) throw new Error(`template ${entry.name} came without its document`);
  return found;
}
