// Link rules come from the catalog: accepted types, cycles, and what a dropped link can wire to.

import { describe, expect, it } from "vitest";
import { accepts, compatibleNodes, reaches, typeColours, whyRefused } from "../src/graphRules";
import type { Catalog } from "../src/types";

const CATALOG: Catalog = {
  Seed: { type: "Seed", category: "primitive", inputs: [], params: [], outputs: [{ name: "seed", type: "INT", colour: "#52b788" }] },
  Float: {
    type: "Float",
    category: "primitive",
    inputs: [],
    params: [{ name: "value", type: "FLOAT", accepts: ["FLOAT", "INT"], colour: "#95d5b2" }],
    outputs: [{ name: "number", type: "FLOAT", colour: "#95d5b2" }],
  },
  Paint: {
    type: "Paint",
    category: "pack",
    // a node pack's own type that takes IMAGE: the editor knows only because the catalog says so
    inputs: [{ name: "canvas", type: "CANVAS", accepts: ["CANVAS", "IMAGE"], colour: "hsl(10 60% 65%)" }],
    params: [],
    outputs: [{ name: "image", type: "IMAGE", colour: "#64dfdf" }],
  },
  Save: { type: "Save", category: "image", inputs: [{ name: "images", type: "IMAGE", accepts: ["IMAGE"] }], params: [], outputs: [] },
  Any: { type: "Any", category: "misc", inputs: [{ name: "value", type: "ANY", accepts: ["*"] }], params: [], outputs: [] },
};

const nodes = ["seed:Seed", "f:Float", "p:Paint", "p2:Paint", "s:Save"].map((s) => {
  const [id, type] = s.split(":");
  return { id, data: { type } };
});

describe("graph rules", () => {
  it("accepts what the port's `accepts` lists, and anything into ANY", () => {
    expect(accepts({ type: "FLOAT", accepts: ["FLOAT", "INT"] }, "INT")).toBe(true);
    expect(accepts({ type: "IMAGE", accepts: ["IMAGE"] }, "INT")).toBe(false);
    expect(accepts({ type: "ANY", accepts: ["*"] }, "LATENT")).toBe(true);
    // a server that predates `accepts`: same type only
    expect(accepts({ type: "IMAGE" }, "IMAGE")).toBe(true);
    expect(accepts({ type: "FLOAT" }, "INT")).toBe(false);
  });

  it("refuses an incompatible link in words naming both types", () => {
    const why = whyRefused(CATALOG, nodes, [], { source: "seed", sourceHandle: "seed", target: "s", targetHandle: "images" });
    expect(why).toBe("INT cannot feed IMAGE (images takes IMAGE)");
    expect(whyRefused(CATALOG, nodes, [], { source: "seed", sourceHandle: "seed", target: "f", targetHandle: "value" })).toBeNull();
    expect(whyRefused(CATALOG, nodes, [], { source: "p", sourceHandle: "image", target: "p2", targetHandle: "canvas" })).toBeNull();
  });

  it("refuses self links and cycles", () => {
    expect(whyRefused(CATALOG, nodes, [], { source: "p", sourceHandle: "image", target: "p", targetHandle: "canvas" })).toMatch(/itself/);
    const edges = [{ source: "p", target: "p2" }];
    expect(reaches(edges, "p", "p2")).toBe(true);
    expect(whyRefused(CATALOG, nodes, edges, { source: "p2", sourceHandle: "image", target: "p", targetHandle: "canvas" })).toMatch(/cycle/);
  });

  it("offers only the node types that can take the other end of a dropped link", () => {
    expect(compatibleNodes(CATALOG, "IMAGE", "source")).toEqual([
      { nodeType: "Paint", handle: "canvas" },
      { nodeType: "Save", handle: "images" },
    ]);
    expect(compatibleNodes(CATALOG, "FLOAT", "target", ["FLOAT", "INT"])).toEqual([
      { nodeType: "Float", handle: "number" },
      { nodeType: "Seed", handle: "seed" },
    ]);
  });

  it("colours come from the catalog", () => {
    const colours = typeColours(CATALOG);
    expect(colours.get("INT")).toBe("#52b788");
    expect(colours.get("CANVAS")).toBe("hsl(10 60% 65%)");
  });
});
