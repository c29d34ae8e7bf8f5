// A template offered as a node: its params and typed outputs.

import { describe, expect, it } from "vitest";
import { subgraphSpec } from "../src/subgraphs";
import type { Catalog } from "../src/types";

const catalog: Catalog = {
  VAEDecode: { type: "VAEDecode", category: "latent", inputs: [], params: [], outputs: [{ name: "image", type: "IMAGE" }] },
};

describe("templates as subgraph nodes", () => {
  it("takes params from the template and types outputs through the inner node", () => {
    const spec = subgraphSpec(
      "txt2img",
      {
        description: "Text to image",
        params: { prompt: { type: "STRING", default: "a cat" }, steps: { type: "INT", default: 25, min: 1, max: 1000 } },
        nodes: { decode: { type: "VAEDecode" } },
        outputs: { image: "decode.image", other: "missing.thing" },
      },
      catalog,
    );
    expect(spec.type).toBe("workflow:txt2img");
    expect(spec.outputs).toEqual([
      { name: "image", type: "IMAGE", doc: "decode.image" },
      { name: "other", type: "ANY", doc: "missing.thing" },
    ]);
    expect(spec.params.map((p) => [p.name, p.type, p.default, p.min, p.max, p.multiline])).toEqual([
      ["prompt", "STRING", "a cat", null, null, true],
      ["steps", "INT", 25, 1, 1000, false],
    ]);
  });
});
