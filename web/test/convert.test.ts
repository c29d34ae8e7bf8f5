// The editor's graph <-> workflow document conversion: every shipped template round-trips.

import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { graphToWorkflow, workflowToGraph } from "../src/convert";
import type { WorkflowDocument } from "../src/types";

const TEMPLATES = join(dirname(fileURLToPath(import.meta.url)), "../../diffgraph/workflows");

function templateFiles(): string[] {
  try {
    return readdirSync(TEMPLATES).filter((f) => f.endsWith(".yaml") || f.endsWith(".yml")).sort();
  } catch {
    return [];
  }
}

/** The document with the per-node positions the editor adds taken out again. */
function withoutPositions(doc: WorkflowDocument): WorkflowDocument {
  const copy = structuredClone(doc);
  for (const node of Object.values(copy.nodes ?? {})) {
    if (node.metadata) {
      delete node.metadata.position;
      if (Object.keys(node.metadata).length === 0) delete node.metadata;
    }
  }
  return copy;
}

/** Objects compared with their key order, as `diffgraph run` would see the saved file. */
function ordered(value: unknown): string {
  return JSON.stringify(value);
}

const HAND_WRITTEN: WorkflowDocument = parse(`
format: diffgraph/v1
name: hand
description: every feature of the format the editor must keep
params:
  prompt: {type: STRING, default: "a red circle"}
  seed: {type: INT, default: 3}
metadata: {author: someone}
nodes:
  seed:
    type: Seed
    params: {value: 7}
  text:
    type: String
    params: {value: $prompt}
    metadata: {note: keep me, position: {x: 5, y: 6}}
  sample:
    params: {steps: 4, cfg: 7.5}
    type: SampleLoop
    inputs: {seed: seed.seed, latent: missing.latent, positive: not-a-link, unet: load.unet}
  load:
    type: LoadPipeline
    params: {model: $$literal dollar}
  sub:
    type: workflow:txt2img
    params: {prompt: $prompt}
outputs: {image: sample.latent}
`);

describe("graph <-> workflow conversion", () => {
  it("keeps a hand-written document with links, dangling links, metadata and subgraphs", () => {
    const graph = workflowToGraph(HAND_WRITTEN);
    expect(graph.nodes.map((n) => n.id)).toEqual(["seed", "text", "sample", "load", "sub"]);
    // only links to existing nodes become edges; the others are kept for the server to report
    expect(graph.edges.map((e) => e.id).sort()).toEqual(["load.unet->sample.unet", "seed.seed->sample.seed"]);
    expect(graph.nodes[1].position).toEqual({ x: 5, y: 6 });
    const saved = graphToWorkflow(graph);
    expect(ordered(withoutPositions(saved))).toBe(ordered(withoutPositions(HAND_WRITTEN)));
    expect(saved.nodes?.text.metadata).toEqual({ note: "keep me", position: { x: 5, y: 6 } });
  });

  it("saves moved positions and a new link, naming a linked param under inputs only", () => {
    const graph = workflowToGraph(HAND_WRITTEN);
    graph.nodes[0].position = { x: 100.4, y: -20.6 };
    graph.edges.push({ id: "x", source: "seed", sourceHandle: "seed", target: "sample", targetHandle: "steps" });
    const saved = graphToWorkflow(graph);
    expect(saved.nodes?.seed.metadata).toEqual({ position: { x: 100, y: -21 } });
    expect(saved.nodes?.sample.inputs?.steps).toBe("seed.seed");
    expect(saved.nodes?.sample.params).toEqual({ cfg: 7.5 });
  });

  const files = templateFiles();
  it("finds the shipped templates", () => {
    expect(files.length).toBeGreaterThan(0);
  });
  for (const file of files) {
    it(`round-trips ${file}`, () => {
      const original = parse(readFileSync(join(TEMPLATES, file), "utf-8")) as WorkflowDocument;
      const saved = graphToWorkflow(workflowToGraph(original));
      expect(ordered(withoutPositions(saved))).toBe(ordered(withoutPositions(original)));
      // every node gets a position the engine ignores, and a second round trip changes nothing
      for (const node of Object.values(saved.nodes ?? {})) expect(node.metadata?.position).toBeDefined();
      expect(ordered(graphToWorkflow(workflowToGraph(saved)))).toBe(ordered(saved));
      // auto-layout places nodes without overlapping each other's top-left corner
      const corners = new Set(workflowToGraph(original).nodes.map((n) => `${n.position.x},${n.position.y}`));
      expect(corners.size).toBe(Object.keys(original.nodes ?? {}).length);
    });
  }
});
