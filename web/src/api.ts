// The server's REST routes (DESIGN.md). Every failure becomes an ApiError whose message is words a
// user can act on: the server's own `error` text, or what went wrong with the connection.

import type { Catalog, Issue, NodeSpec, WorkflowDocument } from "./types";

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly issues: Issue[] = [],
    /** the request that failed and its HTTP status, for the console rather than the user */
    readonly detail: string = "",
  ) {
    super(message);
  }
}

/** Words for the user: the server's own message, without HTTP method, path or status. */
export function errorText(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined || body instanceof FormData ? undefined : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError("Cannot reach the diffgraph server; is `diffgraph serve` still running?", 0, [], `${method} ${path}: ${(error as Error).message}`);
  }
  const text = await response.text();
  let payload: unknown = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const record = (payload ?? {}) as { error?: string; errors?: Issue[] };
    const issues = Array.isArray(record.errors) ? record.errors : [];
    let message = record.error ?? (text.trim().slice(0, 300) || response.statusText);
    if (issues.length > 0) {
      const where = (i: Issue) => [i.node, i.field].filter(Boolean).join(".");
      const listed = issues.slice(0, 3).map((i) => (where(i) ? `${where(i)}: ${i.message}` : i.message));
      message += ` — ${listed.join("; ")}${issues.length > 3 ? `; and ${issues.length - 3} more` : ""}`;
    }
    const sentence = message.charAt(0).toUpperCase() + message.slice(1);
    throw new ApiError(sentence, response.status, issues, `${method} ${path} failed (${response.status})`);
  }
  return payload as T;
}

export interface RunRecord {
  id: string;
  seq?: number;
  status: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  name?: string | null;
  params?: Record<string, unknown>;
  created_at?: string | null;
  finished_at?: string | null;
  outputs: Record<string, string[]>;
  executed?: string[];
  cached?: string[];
  error?: string | null;
  failed_node?: string | null;
  workflow?: WorkflowDocument;
}

export interface TemplateEntry {
  name: string;
  description?: string;
  workflow?: WorkflowDocument;
  document?: WorkflowDocument;
  [key: string]: unknown;
}

export interface LibraryEntry {
  name: string;
  updated_at?: string;
  [key: string]: unknown;
}

function listOf<T>(payload: unknown, key: string): T[] {
  if (Array.isArray(payload)) return payload as T[];
  const value = (payload as Record<string, unknown> | null)?.[key];
  return Array.isArray(value) ? (value as T[]) : [];
}

export async function fetchCatalog(): Promise<Catalog> {
  const payload = await request<unknown>("GET", "/api/nodes");
  const catalog: Catalog = {};
  for (const spec of listOf<NodeSpec>(payload, "nodes")) catalog[spec.type] = spec;
  return catalog;
}

export async function validateWorkflow(
  workflow: WorkflowDocument,
): Promise<{ valid: boolean; errors: Issue[]; families: Record<string, string> }> {
  const payload = await request<{ valid: boolean; errors?: Issue[]; families?: Record<string, string> }>("POST", "/api/validate", { workflow });
  return { valid: payload.valid, errors: payload.errors ?? [], families: payload.families ?? {} };
}

/** A run's speed options (POST /api/runs' `options`); left out, the run takes the server's flags. */
export interface RunOptions {
  compile?: boolean;
}

export async function startRun(workflow: WorkflowDocument, params?: Record<string, unknown>, options?: RunOptions): Promise<string> {
  const body: Record<string, unknown> = { workflow };
  if (params) body.params = params;
  if (options && Object.keys(options).length > 0) body.options = options;
  const payload = await request<{ id: string }>("POST", "/api/runs", body);
  return payload.id;
}

export const cancelRun = (id: string) => request<unknown>("POST", `/api/runs/${encodeURIComponent(id)}/cancel`);
export const fetchRun = (id: string) => request<RunRecord>("GET", `/api/runs/${encodeURIComponent(id)}`);
export const fetchRuns = async (limit = 50) =>
  listOf<RunRecord>(await request<unknown>("GET", `/api/runs?limit=${limit}`), "runs");

export async function fetchTemplates(): Promise<TemplateEntry[]> {
  return listOf<TemplateEntry>(await request<unknown>("GET", "/api/templates"), "templates");
}

export async function fetchLibrary(): Promise<LibraryEntry[]> {
  return listOf<LibraryEntry>(await request<unknown>("GET", "/api/workflows"), "workflows");
}

export async function fetchSaved(name: string): Promise<WorkflowDocument> {
  const payload = await request<Record<string, unknown>>("GET", `/api/workflows/${encodeURIComponent(name)}`);
  // either the document itself or {name, workflow}
  const inner = payload.workflow ?? payload.document;
  return (inner && typeof inner === "object" ? inner : payload) as WorkflowDocument;
}

export const saveToLibrary = (name: string, workflow: WorkflowDocument) =>
  request<unknown>("PUT", `/api/workflows/${encodeURIComponent(name)}`, { workflow });
export const deleteFromLibrary = (name: string) =>
  request<unknown>("DELETE", `/api/workflows/${encodeURIComponent(name)}`);

/** The names of the models the server knows; of one kind ("lora", "vae", ...) when `kind` is given. */
export async function fetchModels(kind = ""): Promise<string[]> {
  try {
    const path = kind ? `/api/models?kind=${encodeURIComponent(kind)}` : "/api/models";
    return listOf<{ name: string } | string>(await request<unknown>("GET", path), "models").map((m) =>
      typeof m === "string" ? m : m.name,
    );
  } catch {
    return []; // a server without the route: model params stay free text
  }
}

/** Upload a picture; its `name` is what LoadImage's `image` takes on this server. */
export async function uploadImage(file: File): Promise<{ name: string }> {
  const form = new FormData();
  form.append("image", file, file.name);
  return request<{ name: string }>("POST", "/api/uploads", form);
}

/** URL of a file under one of the server's folders: each segment of its relative name escaped. */
function fileUrl(folder: "uploads" | "outputs", name: string): string {
  return `/api/${folder}/${name.split("/").map(encodeURIComponent).join("/")}`;
}

/** URL of an uploaded picture (the name POST /api/uploads gave): the server reads it back. */
export const uploadUrl = (name: string): string => fileUrl("uploads", name);

/** URL of a run output (a name relative to the server's outputs folder). */
export const outputUrl = (name: string): string => fileUrl("outputs", name);
