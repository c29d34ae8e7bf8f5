// Reads the workflow SaveImage embeds in a PNG: a `diffgraph` tEXt, zTXt or iTXt chunk holding
// JSON {"workflow": document, "params": {...}}.

import type { WorkflowDocument } from "./types";

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
export const PNG_KEYWORD = "diffgraph";

export interface EmbeddedWorkflow {
  workflow: WorkflowDocument;
  params: Record<string, unknown>;
}

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

/** Text chunks of a PNG as keyword -> text (compressed chunks are inflated). */
export async function pngTextChunks(bytes: Uint8Array): Promise<Record<string, string>> {
  if (!isPng(bytes)) throw new Error("not a PNG file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  const texts: Record<string, string> = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const kind = latin1.decode(bytes.subarray(offset + 4, offset + 8));
    const start = offset + 8;
    const end = start + length;
    if (end + 4 > bytes.length) throw new Error(`PNG chunk ${kind} is truncated`);
    const body = bytes.subarray(start, end);
    if (kind === "tEXt" || kind === "zTXt" || kind === "iTXt") {
      const nul = body.indexOf(0);
      if (nul > 0) {
        const keyword = latin1.decode(body.subarray(0, nul));
        if (kind === "tEXt") {
          texts[keyword] = latin1.decode(body.subarray(nul + 1));
        } else if (kind === "zTXt") {
          texts[keyword] = latin1.decode(await inflate(body.subarray(nul + 2)));
        } else {
          // iTXt: keyword\0 compressed-flag method language\0 translated-keyword\0 text
          const compressed = body[nul + 1] === 1;
          const languageEnd = body.indexOf(0, nul + 3);
          const translatedEnd = body.indexOf(0, languageEnd + 1);
          const text = body.subarray(translatedEnd + 1);
          texts[keyword] = utf8.decode(compressed ? await inflate(text) : text);
        }
      }
    }
    if (kind === "IEND") break;
    offset = end + 4; // skip the CRC
  }
  return texts;
}

async function inflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The workflow embedded by SaveImage, or an Error saying why there is none. */
export async function readEmbeddedWorkflow(bytes: Uint8Array): Promise<EmbeddedWorkflow> {
  const texts = await pngTextChunks(bytes);
  const text = texts[PNG_KEYWORD];
  if (text === undefined) {
    throw new Error(`this PNG carries no "${PNG_KEYWORD}" text chunk; only images saved by SaveImage do`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`the "${PNG_KEYWORD}" chunk is not valid JSON: ${(error as Error).message}`);
  }
  const record = parsed as { workflow?: unknown; params?: unknown };
  if (typeof record !== "object" || record === null || typeof record.workflow !== "object" || !record.workflow) {
    throw new Error(`the "${PNG_KEYWORD}" chunk holds no workflow`);
  }
  const params = typeof record.params === "object" && record.params !== null ? record.params : {};
  return { workflow: record.workflow as WorkflowDocument, params: params as Record<string, unknown> };
}
