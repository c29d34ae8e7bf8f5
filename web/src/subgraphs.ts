// Templates as nodes: a `workflow:<name>` node runs that workflow as a subgraph. Its params are the
// workflow's template params, its outputs the workflow's `outputs:`, typed through the catalog.

import { parseLink } from "./convert";
import type { Catalog, NodeSpec, WorkflowDocument } from "./types";

export function subgraphSpec(name: string, doc: WorkflowDocument, catalog: Catalog): NodeSpec {
  const nodes = doc.nodes ?? {};
  const outputs = Object.entries(doc.outputs ?? {}).map(([output, link]) => {
    const parsed = parseLink(link);
    const inner = parsed ? nodes[parsed[0]] : undefined;
    const type = inner && parsed ? catalog[inner.type]?.outputs.find((o) => o.name === parsed[1])?.type : undefined;
    return { name: output, type: type ?? "ANY", doc: `${link}` };
  });
  const params = Object.entries(doc.params ?? {}).map(([param, decl]) => ({
    name: param,
    type: decl.type,
    required: decl.default === undefined,
    default: decl.default,
    min: decl.min ?? null,
    max: decl.max ?? null,
    step: null,
    choices: decl.choices ?? null,
    multiline: param.includes("prompt"),
    doc: decl.description ?? "",
  }));
  return {
    type: `workflow:${name}`,
    category: "workflows",
    doc: `${doc.description ?? name} (runs the ${name} workflow as one node)`,
    inputs: [],
    params,
    outputs,
  };
}
