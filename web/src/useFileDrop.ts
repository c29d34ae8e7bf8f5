// Files opened or dropped on the canvas: a PNG made by SaveImage opens its workflow, a plain
// picture becomes a LoadImage node with it uploaded, YAML/JSON opens as a workflow; a palette
// entry dropped on the canvas adds that node there.

import { useReactFlow } from "@xyflow/react";
import { useCallback, type DragEvent } from "react";
import type { DgEdge, DgNode } from "./convert";
import { isPng, readEmbeddedWorkflow } from "./png";
import type { WorkflowDocument } from "./types";
import type { LoadDocument } from "./useDocumentLoader";
import type { AddNode } from "./usePlacement";

export function useFileDrop(options: {
  addNode: AddNode;
  upload(file: File): Promise<string>;
  loadDocument: LoadDocument;
  say(text: string): void;
  fail(error: unknown): void;
}) {
  const { addNode, upload, loadDocument, say, fail } = options;
  const flow = useReactFlow<DgNode, DgEdge>();

  const openFile = useCallback(
    async (file: File, dropAt?: { x: number; y: number }) => {
      try {
        const bytes = new Uint8Array(await file.arrayBuffer());
        if (isPng(bytes)) {
          const embedded = await readEmbeddedWorkflow(bytes).catch(() => null);
          if (embedded) {
            const opened = structuredClone(embedded.workflow);
            // the image was made with these template param values: make them the defaults
            for (const [name, value] of Object.entries(embedded.params)) {
              const declared = opened.params?.[name];
              if (declared && typeof declared === "object") declared.default = value;
            }
            loadDocument(opened, file.name);
            return;
          }
        }
        if (file.type.startsWith("image/") || isPng(bytes)) {
          const id = addNode("LoadImage", dropAt, { image: await upload(file) });
          say(`Uploaded ${file.name} into a new LoadImage node ${id}.`);
          return;
        }
        const text = new TextDecoder().decode(bytes);
        let parsed: unknown;
        try {
          // YAML is loaded on first use: most sessions never open a file
          parsed = (await import("yaml")).parse(text);
        } catch (error) {
          throw new Error(`${file.name} is not valid YAML or JSON: ${(error as Error).message}`);
        }
        loadDocument(parsed as WorkflowDocument, file.name);
      } catch (error) {
        fail(error);
      }
    },
    [addNode, fail, loadDocument, say, upload],
  );

  const onDrop = useCallback(
    (e: DragEvent) => {
      e.preventDefault();
      const at = flow.screenToFlowPosition({ x: e.clientX, y: e.clientY });
      const type = e.dataTransfer.getData("application/diffgraph-node");
      if (type) addNode(type, at);
      else if (e.dataTransfer.files?.[0]) openFile(e.dataTransfer.files[0], at);
    },
    [addNode, flow, openFile],
  );

  return { openFile, onDrop };
}
