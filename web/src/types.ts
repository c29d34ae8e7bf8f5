// Shapes shared with the server: the node catalog (GET /api/nodes) and workflow documents (DESIGN.md).

export interface PortSpec {
  name: string;
  type: string;
  optional?: boolean;
  doc?: string;
  /** the source types a link into this port may carry ("*": any); from the engine's own rule */
  accepts?: string[] | null;
  /** the colour of the port's type (CSS) */
  colour?: string;
}

/** Which widget a param wants beyond its type (the catalog says so; the editor does not guess). */
export type WidgetHint = "upload" | "seed" | "model" | `model:${string}`;

export interface ParamSpec {
  name: string;
  type: string; // INT | FLOAT | STRING | BOOLEAN
  required?: boolean;
  default?: unknown;
  min?: number | null;
  max?: number | null;
  step?: number | null;
  choices?: string[] | null;
  multiline?: boolean;
  widget?: WidgetHint | null;
  doc?: string;
  accepts?: string[] | null;
  colour?: string;
}

export interface NodeSpec {
  type: string;
  category: string;
  version?: number;
  doc?: string;
  output_node?: boolean;
  inputs: PortSpec[];
  params: ParamSpec[];
  outputs: PortSpec[];
  schema?: unknown;
}

export type Catalog = Record<string, NodeSpec>;

/** One node of a workflow document, as written in the file. */
export interface WorkflowNode {
  type: string;
  inputs?: Record<string, string>;
  params?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface WorkflowDocument {
  format?: string;
  name?: string;
  description?: string;
  params?: Record<string, TemplateParam>;
  nodes?: Record<string, WorkflowNode>;
  outputs?: Record<string, string>;
  metadata?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface TemplateParam {
  type: string;
  default?: unknown;
  min?: number;
  max?: number;
  choices?: string[];
  description?: string;
}

/** A validation or run error as the server reports it. */
export interface Issue {
  node: string | null;
  field: string | null;
  message: string;
}
