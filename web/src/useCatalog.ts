// The node catalog (GET /api/nodes), with each template also a node that runs it as a subgraph,
// and the colours of its types.

import { useEffect, useMemo, useState } from "react";
import { typeColours } from "./graphRules";
import { prefetch } from "./startup";
import { subgraphSpec } from "./subgraphs";
import type { Catalog } from "./types";

export function useCatalog(fail: (error: unknown) => void) {
  const [catalog, setCatalog] = useState<Catalog>({});
  const [catalogLoaded, setCatalogLoaded] = useState(false);
  useEffect(() => {
    let cancelled = false;
    (async () => {
      try {
        const [loaded, templates] = await prefetch().catalog;
        if (cancelled) return;
        performance.mark("diffgraph:catalog");
        if (templates instanceof Error) fail(templates);
        for (const entry of templates instanceof Error ? [] : templates) {
          const templateDoc = entry.document ?? entry.workflow;
          if (templateDoc) {
            const spec = subgraphSpec(entry.name, templateDoc, loaded);
            loaded[spec.type] = spec;
          }
        }
        setCatalog(loaded);
      } catch (error) {
        fail(error);
      } finally {
        if (!cancelled) setCatalogLoaded(true);
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [fail]);
  const colours = useMemo(() => typeColours(catalog), [catalog]);
  return { catalog, catalogLoaded, colours };
}
