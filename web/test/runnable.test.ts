// Muted nodes stay out of the run with what depends on them; bypassed nodes pass their input through.

import { describe, expect, it } from "vitest";
import { runnableDocument } from "../src/runnable";
import type { Catalog, WorkflowDocument } from "../src/types";

const CATALOG: Catalog = {
  LoadImage: { type: "LoadImage", category: "image", inputs: [], params: [{ name: "image", type: "STRING" }], outputs: [{ name: "image", type: "IMAGE" }, { name: "mask", type: "MASK" }] },
  Blur: {
    type: "Blur",
    category: "image",
    inputs: [{ name: "mask", type: "MASK" }, { name: "image", type: "IMAGE" }],
    params: [{ name: "radius", type: "FLOAT", accepts: ["FLOAT", "INT"] }],
    outputs: [{ name: "image", type: "IMAGE" }],
  },
  Save: { type: "Save", category: "image", inputs: [{ name: "images", type: "IMAGE" }], params: [], outputs: [] },
};

const doc = (flags: Record<string, Record<string, boolean>>): WorkflowDocument => ({
  format: "diffgraph/v1",
  nodes: {
    load: { type: "LoadImage", params: { image: "a.png" }, metadata: flags.load },
    blur: { type: "Blur", inputs: { mask: "load.mask", image: "load.image" }, metadata: flags.blur },
    blur2: { type: "Blur", inputs: { image: "blur.image" }, metadata: flags.blur2 },
    save: { type: "Save", inputs: { images: "blur2.image" }, metadata: flags.save },
  },
  outputs: { picture: "blur2.image" },
});

describe("runnableDocument", () => {
  it("changes nothing without flags", () => {
    const { document, skipped } = runnableDocument(doc({}), CATALOG);
    expect(document).toEqual(doc({}));
    expect(skipped).toEqual([]);
  });

  it("a bypassed node passes the input of its output's type through (not the first input)", () => {
    const { document, skipped } = runnableDocument(doc({ blur: { bypassed: true } }), CATALOG);
    expect(Object.keys(document.nodes!)).toEqual(["load", "blur2", "save"]);
    expect(document.nodes!.blur2.inputs).toEqual({ image: "load.image" });
    expect(skipped).toEqual([{ node: "blur", reason: "bypassed" }]);
  });

  it("two bypassed nodes in a row pass through both, the workflow's outputs too", () => {
    const { document } = runnableDocument(doc({ blur: { bypassed: true }, blur2: { bypassed: true } }), CATALOG);
    expect(document.nodes!.save.inputs).toEqual({ images: "load.image" });
    expect(document.outputs).toEqual({ picture: "load.image" });
  });

  it("a muted node leaves the run with everything downstream of it", () => {
    const { document, skipped } = runnableDocument(doc({ blur: { muted: true } }), CATALOG);
    expect(Object.keys(document.nodes!)).toEqual(["load"]);
    expect(document.outputs).toEqual({});
    expect(skipped.map((s) => `${s.node}:${s.reason}`)).toEqual(["blur:muted", "blur2:downstream of a muted node", "save:downstream of a muted node"]);
  });
});
