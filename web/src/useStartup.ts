// What the editor opens first: the document named in the URL, else the working graph this browser
// kept, else the landing template (as ComfyUI opens its default graph). `ready` once it is painted.

import { useEffect, useRef, useState } from "react";
import { prefetch, templateDocument } from "./startup";
import type { LoadDocument } from "./useDocumentLoader";
import { readWorkingGraph } from "./useWorkingGraph";

/** The template a first visit opens. */
export const LANDING_TEMPLATE = "txt2img";

export function useStartup(catalogLoaded: boolean, loadDocument: LoadDocument, fail: (error: unknown) => void): boolean {
  const [ready, setReady] = useState(false);
  const started = useRef(false);
  useEffect(() => {
    if (started.current || !catalogLoaded) return;
    started.current = true;
    (async () => {
      try {
        // the document named in the URL: asked for with the catalog (main.tsx), not after it
        const opened = await prefetch().document;
        const working = opened ? null : readWorkingGraph();
        if (opened) loadDocument(opened[0], opened[1], { keepHistory: false });
        else if (working) loadDocument(working.document, "your last working graph", { keepHistory: false, unsaved: working.unsaved, quiet: true });
        else {
          const landing = (await prefetch().catalog)[1];
          const entry = landing instanceof Error ? undefined : landing.find((t) => t.name === LANDING_TEMPLATE);
          if (entry) loadDocument(templateDocument(entry), `template ${LANDING_TEMPLATE}`, { keepHistory: false });
        }
      } catch (error) {
        fail(error);
      } finally {
        setReady(true);
      }
    })();
  }, [catalogLoaded, fail, loadDocument]);

  // ready once the loaded graph has been painted: the benchmark and the e2e tests wait for it
  useEffect(() => {
    if (!ready) return;
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        performance.mark("diffgraph:ready");
        document.body.dataset.ready = "true";
      }),
    );
  }, [ready]);
  return ready;
}
