// One node on the canvas: typed handles, param widgets, live run state, issues and images.

import { BaseEdge, getBezierPath, Handle, Position, useStore, type EdgeProps, type NodeProps } from "@xyflow/react";
import { lazy, memo, Suspense, useContext, useEffect, useId, useState } from "react";
import { createPortal } from "react-dom";
import { modelKind, useModels } from "./models";
import { useUpload } from "./useUpload";
import type { DgNode } from "./convert";
import { colourOf, EditorContext } from "./editorContext";
import { useNodeLinks, useNodeStatus } from "./nodeStatus";
import type { ParamSpec, PortSpec } from "./types";

/** the mask painter is opened rarely: its code loads when it is first opened, not at startup */
export const MaskPainter = lazy(() => import("./MaskPainter").then((m) => ({ default: m.MaskPainter })));

function isTemplateRef(value: unknown): value is string {
  return typeof value === "string" && value.startsWith("$") && !value.startsWith("$$");
}

function NumberWidget({ spec, value, onChange }: { spec: ParamSpec; value: unknown; onChange: (v: unknown) => void }) {
  const [text, setText] = useState(value === undefined || value === null ? "" : String(value));
  // follow outside changes (undo, randomize) without fighting a half-typed "1." or "-"
  useEffect(() => {
    setText((current) => (Number(current) === value || current.trim() === value ? current : value == null ? "" : String(value)));
  }, [value]);
  const integer = spec.type === "INT";
  const commit = (raw: string) => {
    setText(raw);
    if (raw.trim() === "") return;
    if (raw.trim().startsWith("$")) return onChange(raw.trim());
    const parsed = integer ? Number(raw) : Number.parseFloat(raw);
    if (Number.isFinite(parsed) && (!integer || Number.isInteger(parsed))) onChange(parsed);
  };
  const hasRange = spec.min != null && spec.max != null && spec.max - spec.min <= 100_000;
  const isSeed = spec.widget === "seed";
  return (
    <div className="number-widget">
      {hasRange && typeof value === "number" && (
        <input
          className="nodrag slider"
          type="range"
          min={spec.min ?? undefined}
          max={spec.max ?? undefined}
          step={spec.step ?? (integer ? 1 : "any")}
          value={value}
          onChange={(e) => commit(e.target.value)}
        />
      )}
      <input
        className="nodrag"
        type="text"
        inputMode={integer ? "numeric" : "decimal"}
        data-param={spec.name}
        value={text}
        onChange={(e) => commit(e.target.value)}
      />
      {isSeed && (
        <button
          className="nodrag icon"
          title="Randomize the seed"
          onClick={() => {
            const max = Math.min(spec.max ?? 2 ** 32 - 1, 2 ** 32 - 1);
            const min = Math.max(spec.min ?? 0, 0);
            onChange(min + Math.floor(Math.random() * (max - min + 1)));
          }}
        >
          rnd
        </button>
      )}
    </div>
  );
}

export function UploadWidget({ value, onChange, name }: { value: unknown; onChange: (v: unknown) => void; name?: string }) {
  const upload = useUpload(value, onChange);
  return (
    <div className="upload-widget">
      <div className="row">
        <input className="nodrag" type="text" data-param={name} value={upload.text} onChange={(e) => onChange(e.target.value)} />
        <button className="nodrag" onClick={upload.choose}>
          Upload…
        </button>
        <input ref={upload.input} type="file" accept="image/*" hidden onChange={upload.onFileChosen} />
      </div>
      {upload.thumb && <img className="thumbnail" data-testid={`thumbnail-${name}`} src={upload.thumb} alt="uploaded" onError={upload.onThumbnailError} />}
      {upload.thumb && (
        <button className="nodrag" onClick={() => upload.setPainting(true)}>
          Paint mask…
        </button>
      )}
      {upload.painting && upload.thumb &&
        createPortal(
          <Suspense fallback={null}>
            <MaskPainter src={upload.thumb} onClose={() => upload.setPainting(false)} onSave={upload.send} />
          </Suspense>,
          document.body,
        )}
      {upload.error && <div className="node-error">{upload.error}</div>}
    </div>
  );
}

function ParamWidget({ spec, value, onChange }: {
  spec: ParamSpec;
  value: unknown;
  onChange: (v: unknown) => void;
}) {
  if (isTemplateRef(value)) {
    // typing a plain number over `$name` gives a number, not the string "5"
    const typed = (text: string) => {
      const number = Number(text);
      const numeric = (spec.type === "INT" || spec.type === "FLOAT") && text.trim() !== "" && Number.isFinite(number);
      return numeric && (spec.type === "FLOAT" || Number.isInteger(number)) ? number : text;
    };
    return (
      <input
        className="nodrag template-ref"
        title="a template param of this workflow (edit it in the Params tab)"
        data-param={spec.name}
        value={value}
        onChange={(e) => onChange(typed(e.target.value))}
      />
    );
  }
  const choices = spec.choices && spec.choices.length > 0 ? spec.choices : null;
  const kind = modelKind(spec.widget);
  if (kind !== null) return <ModelInput name={spec.name} kind={kind} value={value} onChange={onChange} className="nodrag" />;
  if (choices) {
    return (
      <select className="nodrag" data-param={spec.name} value={String(value ?? "")} onChange={(e) => onChange(e.target.value)}>
        {!choices.includes(String(value)) && <option value={String(value ?? "")}>{String(value ?? "")}</option>}
        {choices.map((choice) => (
          <option key={choice} value={choice}>
            {choice}
          </option>
        ))}
      </select>
    );
  }
  if (spec.type === "BOOLEAN") {
    return <input className="nodrag" type="checkbox" data-param={spec.name} checked={value === true} onChange={(e) => onChange(e.target.checked)} />;
  }
  if (spec.type === "INT" || spec.type === "FLOAT") return <NumberWidget spec={spec} value={value} onChange={onChange} />;
  if (spec.widget === "upload") return <UploadWidget value={value} onChange={onChange} name={spec.name} />;
  if (spec.multiline) {
    return (
      <textarea
        className="nodrag nowheel"
        data-param={spec.name}
        rows={3}
        value={String(value ?? "")}
        onChange={(e) => onChange(e.target.value)}
      />
    );
  }
  return <input className="nodrag" type="text" data-param={spec.name} value={String(value ?? "")} onChange={(e) => onChange(e.target.value)} />;
}

/** A model param: the models of its kind the server knows as choices, and any other name typed freely. */
export function ModelInput({ name, kind, value, onChange, className }: { name: string; kind: string; value: unknown; onChange(v: unknown): void; className?: string }) {
  const models = useModels(kind);
  const list = useId();
  return (
    <>
      <input
        className={className}
        type="text"
        list={list}
        data-param={name}
        aria-label={name}
        value={String(value ?? "")}
        placeholder="pick a known model or type a name"
        onChange={(e) => onChange(e.target.value)}
      />
      <datalist id={list} data-testid={`models-${name}`}>
        {models.map((m) => (
          <option key={m} value={m} />
        ))}
      </datalist>
    </>
  );
}

function PortHandle({ port, kind }: { port: PortSpec; kind: "source" | "target" }) {
  const { colours } = useContext(EditorContext);
  return (
    <Handle
      type={kind}
      id={port.name}
      position={kind === "source" ? Position.Right : Position.Left}
      className={`port port-${port.type}`}
      style={{ background: port.colour ?? colourOf(colours, port.type) }}
      data-port-type={port.type}
      title={`${port.name}: ${port.type}${port.doc ? ` — ${port.doc}` : ""}`}
    />
  );
}

/** The node's id; double-click to rename it. */
function NodeId({ id }: { id: string }) {
  const actions = useContext(EditorContext);
  const [editing, setEditing] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (!editing) {
    return (
      <span className="dg-node-id" title="double-click to rename" onDoubleClick={() => setEditing(true)}>
        {id}
      </span>
    );
  }
  const commit = (value: string) => {
    const why = actions.renameNode(id, value);
    setError(why);
    if (!why) setEditing(false);
  };
  return (
    <span className="dg-node-id">
      <input
        className="nodrag rename"
        aria-label="node id"
        defaultValue={id}
        autoFocus
        onKeyDown={(e) => {
          if (e.key === "Enter") commit(e.currentTarget.value);
          if (e.key === "Escape") setEditing(false);
        }}
        onBlur={(e) => commit(e.currentTarget.value)}
      />
      {error && <span className="node-error">{error}</span>}
    </span>
  );
}

export const DETAIL_ZOOM = 0.45;
/** below this zoom labels are a few pixels high: they are laid out but not painted */
export const FAR_ZOOM = 0.25;

function formatSeconds(seconds: number): string {
  return seconds < 10 ? `${seconds.toFixed(2)} s` : `${seconds.toFixed(1)} s`;
}

/** "compiling… 12 s", counting while torch.compile works (it sends nothing until it is done). */
function CompilingBadge({ since }: { since: number }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const seconds = Math.max(0, Math.floor((now - since) / 1000));
  return (
    <span className="badge badge-running badge-compiling" data-testid="node-state" title="torch.compile is compiling the denoiser (once per image size in this server)">
      compiling… {seconds} s
    </span>
  );
}

function summarize(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value) ?? "";
  return text.length > 24 ? `${text.slice(0, 23)}…` : text;
}

function GraphNodeView({ id, data, selected }: NodeProps<DgNode>) {
  const actions = useContext(EditorContext);
  const status = useNodeStatus(id);
  const links = useNodeLinks(id);
  // far out, widgets are unreadable: draw rows without them (keeps 500-node graphs smooth)
  const detailed = useStore((s) => s.transform[2] >= DETAIL_ZOOM);
  const far = useStore((s) => s.transform[2] < FAR_ZOOM);
  const linked = new Set(links.targets);
  const spec = actions.catalog[data.type];
  // ports the catalog does not know (subgraphs, unknown types) still get handles for their links
  const inputs: PortSpec[] = [...(spec?.inputs ?? [])];
  const params: ParamSpec[] = [...(spec?.params ?? [])];
  const outputs: PortSpec[] = [...(spec?.outputs ?? [])];
  const known = new Set([...inputs, ...params].map((p) => p.name));
  for (const name of linked) if (name && !known.has(name)) inputs.push({ name, type: "ANY" });
  const knownOut = new Set(outputs.map((p) => p.name));
  for (const name of links.sources) if (name && !knownOut.has(name)) {
    knownOut.add(name);
    outputs.push({ name, type: "ANY" });
  }
  if (!spec) for (const name of Object.keys(data.params)) if (!known.has(name)) params.push({ name, type: "STRING" });
  const issuesByField = new Map<string, string[]>();
  const nodeIssues: string[] = [];
  for (const issue of status.issues) {
    const field = issue.field ?? "";
    if (field && (known.has(field) || params.some((p) => p.name === field))) {
      issuesByField.set(field, [...(issuesByField.get(field) ?? []), issue.message]);
    } else {
      nodeIssues.push(field ? `${field}: ${issue.message}` : issue.message);
    }
  }
  const state = status.state;
  const collapsed = data.metadata?.collapsed === true;
  const muted = data.metadata?.muted === true;
  const bypassed = data.metadata?.bypassed === true;
  const compiling = state === "running" && status.stage?.name === "compile";
  const badge =
    state === "running"
      ? compiling
        ? null
        : status.total
        ? `running ${status.step ?? 0}/${status.total}`
        : "running"
      : state;
  const classes = ["dg-node", collapsed ? "is-collapsed" : "", muted ? "is-muted" : "", bypassed ? "is-bypassed" : "", state ? `state-${state}` : "", status.issues.length ? "has-issues" : "", selected ? "selected" : "", far ? "far" : ""];
  return (
    <div className={classes.join(" ")} data-testid={`node-${id}`} data-state={state ?? "idle"} data-node-type={data.type}>
      <div className="dg-node-header" title={spec?.doc ?? (spec ? "" : `unknown node type ${data.type}`)}>
        <NodeId id={id} />
        {!far && <span className="dg-node-type">{data.type}</span>}
        {status.family && (
          <span className="badge badge-family" data-testid="node-family" title="the model family, from the model's own files">
            {status.family}
          </span>
        )}
        {compiling && status.stage && <CompilingBadge since={status.stage.since} />}
        {badge && <span className={`badge badge-${state}`} data-testid="node-state">{badge}</span>}
        {status.seconds !== undefined && state === "done" && (
          <span className="badge badge-time" data-testid="node-time" title="time this node took in the last run">
            {formatSeconds(status.seconds)}
          </span>
        )}
        {/* zoomed out the buttons are unreadable; 3 x 500 of them would slow panning */}
        {detailed && (
          <>
        <button
          className={`nodrag icon flag ${muted ? "on" : ""}`}
          data-testid="mute"
          title="Mute (Ctrl+M): leave this node and what depends on it out of runs"
          onClick={() => actions.toggleFlag(id, "muted")}
        >
          M
        </button>
        <button
          className={`nodrag icon flag ${bypassed ? "on" : ""}`}
          data-testid="bypass"
          title="Bypass (Ctrl+B): runs pass this node's input of the same type straight through"
          onClick={() => actions.toggleFlag(id, "bypassed")}
        >
          B
        </button>
        <button
          className="nodrag icon collapse"
          data-testid="collapse"
          title={collapsed ? "Expand the node" : "Collapse the node"}
          onClick={() => actions.toggleFlag(id, "collapsed")}
        >
          {collapsed ? "▸" : "▾"}
        </button>
          </>
        )}
      </div>
      {state === "running" && status.total ? (
        <div className="progress">
          <div style={{ width: `${(100 * (status.step ?? 0)) / status.total}%` }} />
        </div>
      ) : null}
      {status.stage && !far && (
        <div className={`node-stage stage-${status.stage.name}`} data-testid="node-stage" data-stage={status.stage.name}>
          {status.stage.message}
        </div>
      )}
      <div className={`dg-node-body ${collapsed ? "collapsed" : ""}`}>
        {outputs.map((port) => (
          <div className="port-row output" key={`out-${port.name}`}>
            {!far && <span className="port-name">{port.name}</span>}
            {!far && <span className="port-type">{port.type}</span>}
            <PortHandle port={port} kind="source" />
          </div>
        ))}
        {inputs.map((port) => (
          <div className={`port-row input ${issuesByField.has(port.name) ? "invalid" : ""}`} key={`in-${port.name}`}>
            <PortHandle port={port} kind="target" />
            {!far && (
              <span className="port-name">
                {port.name}
                {port.optional ? "?" : ""}
              </span>
            )}
            {!far && <span className="port-type">{port.type}</span>}
            {issuesByField.get(port.name)?.map((m, i) => (
              <div className="field-error" key={i}>{m}</div>
            ))}
          </div>
        ))}
        {params.map((param) => {
          const isLinked = linked.has(param.name);
          // far out only linked params keep a row: their handle anchors an edge
          if ((!detailed || collapsed) && !isLinked && !issuesByField.has(param.name)) return null;
          const value = param.name in data.params ? data.params[param.name] : param.default;
          return (
            <div className={`param-row ${issuesByField.has(param.name) ? "invalid" : ""}`} key={`param-${param.name}`} title={param.doc}>
              <Handle
                type="target"
                id={param.name}
                position={Position.Left}
                className={`port param-port port-${param.type}`}
                style={{ background: param.colour ?? colourOf(actions.colours, param.type) }}
                data-port-type={param.type}
              />
              {!far && <label>{param.name}</label>}
              {far ? null : isLinked ? (
                <span className="linked">linked</span>
              ) : !detailed ? (
                <span className="summary">{summarize(value)}</span>
              ) : (
                <ParamWidget
                  spec={param}
                  value={value}
                  onChange={(v) => actions.setParam(id, param.name, v)}
                />
              )}
              {issuesByField.get(param.name)?.map((m, i) => (
                <div className="field-error" key={i}>{m}</div>
              ))}
            </div>
          );
        })}
      </div>
      {(nodeIssues.length > 0 || status.error) && (
        <div className="node-errors" data-testid="node-errors">
          {nodeIssues.map((m, i) => (
            <div className="node-error" key={i}>{m}</div>
          ))}
          {status.error && <div className="node-error">{status.error}</div>}
        </div>
      )}
      {status.preview && (state === "running" || state === "cancelled") && <img className="preview" src={status.preview} alt="preview" />}
      {status.images.length > 0 && (
        <div className="images" data-testid="node-images">
          {status.images.map((src) => (
            <a key={src} href={src} target="_blank" rel="noreferrer">
              <img src={src} alt="output" />
            </a>
          ))}
        </div>
      )}
    </div>
  );
}

export const GraphNode = memo(GraphNodeView);

/** A link drawn in the colour of the type it carries. */
export const TypedEdge = memo(function TypedEdge(props: EdgeProps) {
  const { colours } = useContext(EditorContext);
  const [path] = getBezierPath(props);
  const type = (props.data as { type?: string } | undefined)?.type;
  return (
    <BaseEdge
      id={props.id}
      path={path}
      // strokeOpacity, not opacity: `opacity` paints each of hundreds of links into its own layer
      style={{ stroke: props.selected ? "#5b9dff" : colourOf(colours, type), strokeWidth: props.selected ? 3 : 2, strokeOpacity: 0.85 }}
    />
  );
});
