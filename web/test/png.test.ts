// Reading the workflow SaveImage embeds in a PNG's text chunks.

import { deflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { readEmbeddedWorkflow } from "../src/png";

const SIGNATURE = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);

function chunk(kind: string, body: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, Buffer.from(kind, "latin1"), body, Buffer.alloc(4)]);
}

function png(...chunks: Buffer[]): Uint8Array {
  const header = chunk("IHDR", Buffer.from([0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
  return new Uint8Array(Buffer.concat([SIGNATURE, header, ...chunks, chunk("IEND", Buffer.alloc(0))]));
}

const payload = { workflow: { format: "diffgraph/v1", nodes: { s: { type: "Seed", params: { value: 1 } } } }, params: { seed: 4 } };

describe("embedded workflow in a PNG", () => {
  it("reads a tEXt chunk", async () => {
    const bytes = png(chunk("tEXt", Buffer.from(`diffgraph\0${JSON.stringify(payload)}`, "latin1")));
    expect(await readEmbeddedWorkflow(bytes)).toEqual(payload);
  });

  it("reads a compressed iTXt chunk with non-Latin text", async () => {
    const withUnicode = { ...payload, params: { prompt: "un chat noir — 黒い猫" } };
    const text = deflateSync(Buffer.from(JSON.stringify(withUnicode), "utf-8"));
    const body = Buffer.concat([Buffer.from("diffgraph\0\x01\x00en\0\0", "latin1"), text]);
    expect(await readEmbeddedWorkflow(png(chunk("iTXt", body)))).toEqual(withUnicode);
  });

  it("reads an uncompressed iTXt and ignores other keywords", async () => {
    const other = chunk("tEXt", Buffer.from("Software\0something", "latin1"));
    const body = Buffer.concat([Buffer.from("diffgraph\0\0\0\0\0", "latin1"), Buffer.from(JSON.stringify(payload))]);
    expect(await readEmbeddedWorkflow(png(other, chunk("iTXt", body)))).toEqual(payload);
  });

  it("says why a PNG without a workflow cannot be opened", async () => {
    await expect(readEmbeddedWorkflow(png())).rejects.toThrow(/no "diffgraph" text chunk/);
    await expect(readEmbeddedWorkflow(new Uint8Array([1, 2, 3]))).rejects.toThrow(/not a PNG/);
    const broken = png(chunk("tEXt", Buffer.from("diffgraph\0{oops", "latin1")));
    await expect(readEmbeddedWorkflow(broken)).rejects.toThrow(/not valid JSON/);
  });
});
