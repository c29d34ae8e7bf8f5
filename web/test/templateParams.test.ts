// Template params get their widget from the node params that use them (the catalog's hints).

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { workflowToGraph } from "../src/convert";
import { templateParamHints } from "../src/templateParams";
import type { Catalog } from "../src/types";

const TEMPLATES = join(dirname(fileURLToPath(import.meta.url)), "../../diffgraph/workflows");

const CATALOG: Catalog = {
  LoadPipeline: { type: "LoadPipeline", category: "loaders", inputs: [], params: [{ name: "model", type: "STRING", widget: "model" }], outputs: [] },
  LoadImage: {
    type: "LoadImage",
    category: "image",
    inputs: [],
    params: [{ name: "image", type: "STRING", widget: "upload" }],
    outputs: [{ name: "image", type: "IMAGE" }, { name: "mask", type: "MASK" }],
  },
  Mask: { type: "Mask", category: "mask", inputs: [{ name: "image", type: "IMAGE" }], params: [], outputs: [{ name: "mask", type: "MASK" }] },
  TextEncode: { type: "TextEncode", category: "c", inputs: [], params: [{ name: "text", type: "STRING", multiline: true }], outputs: [] },
  SampleLoop: { type: "SampleLoop", category: "s", inputs: [], params: [{ name: "seed", type: "INT", widget: "seed" }], outputs: [] },
  VAEEncode: { type: "VAEEncode", category: "l", inputs: [{ name: "image", type: "IMAGE" }, { name: "mask", type: "MASK" }], params: [], outputs: [{ name: "latent", type: "LATENT" }] },
};

describe("template param hints", () => {
  it("the inpaint template: image and mask upload, the mask picture is a mask, prompt multiline, seed and model", () => {
    const doc = workflowToGraph(parse(readFileSync(join(TEMPLATES, "inpaint.yaml"), "utf8")));
    const hints = templateParamHints(doc, CATALOG);
    expect(hints.image).toEqual({ widget: "upload" });
    expect(hints.mask).toEqual({ widget: "upload", mask: true });
    expect(hints.prompt).toEqual({ multiline: true });
    expect(hints.seed).toEqual({ widget: "seed" });
    expect(hints.model).toEqual({ widget: "model" });
    expect(hints.steps).toBeUndefined();
  });

  it("a param named like a prompt but used by a one-line field gets no multiline guess", () => {
    const doc = workflowToGraph({ format: "diffgraph/v1", nodes: { l: { type: "LoadPipeline", params: { model: "$prompt" } } } });
    expect(templateParamHints(doc, CATALOG)).toEqual({ prompt: { widget: "model" } });
  });
});
