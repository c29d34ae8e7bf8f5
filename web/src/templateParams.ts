// What each template param (`$name` in the workflow's `params:`) is for, read from the node params
// that use it: the catalog's widget hint of that param, and whether the picture becomes a mask.

import type { Doc } from "./document";
import type { Catalog, WidgetHint } from "./types";

export interface TemplateParamHint {
  widget?: WidgetHint;
  multiline?: boolean;
  /** an uploaded picture that a mask-making node reads (paint it rather than pick a photo) */
  mask?: boolean;
}

export function templateParamHints(doc: Pick<Doc, "nodes" | "edges">, catalog: Catalog): Record<string, TemplateParamHint> {
  const hints: Record<string, TemplateParamHint> = {};
  const typeOf = new Map(doc.nodes.map((n) => [n.id, n.data.type]));
  for (const node of doc.nodes) {
    const spec = catalog[node.data.type];
    if (!spec) continue;
    for (const [name, value] of Object.entries(node.data.params)) {
      if (typeof value !== "string" || !value.startsWith("$") || value.startsWith("$$")) continue;
      const param = spec.params.find((p) => p.name === name);
      if (!param) continue;
      const hint = (hints[value.slice(1)] ??= {});
      if (param.widget) hint.widget = param.widget;
      if (param.multiline) hint.multiline = true;
      if (param.widget === "upload") {
        // the picture feeds a node that makes a MASK: it is a mask picture
        const feedsMask = doc.edges.some(
          (e) => e.source === node.id && catalog[typeOf.get(e.target) ?? ""]?.outputs.some((o) => o.type === "MASK"),
        );
        if (feedsMask) hint.mask = true;
      }
    }
  }
  return hints;
}
