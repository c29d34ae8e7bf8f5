// The side panel: node palette, workflow (template) params, template gallery, library, history.

import { Suspense, useContext, useEffect, useMemo, useState } from "react";
import { createPortal } from "react-dom";
import * as api from "./api";
import { outputUrl } from "./api";
import { colourOf, EditorContext } from "./editorContext";
import { MaskPainter, ModelInput } from "./GraphNode";
import { modelKind } from "./models";
import { useUpload } from "./useUpload";
import type { TemplateParamHint } from "./templateParams";
import type { Catalog, TemplateParam, WorkflowDocument } from "./types";

type Tab = "nodes" | "params" | "templates" | "library" | "history" | "gallery";

interface Props {
  catalog: Catalog;
  base: WorkflowDocument;
  /** what each template param is for (from the nodes that use it) */
  hints: Record<string, TemplateParamHint>;
  addNode(type: string): void;
  setTemplateParam(name: string, patch: Partial<TemplateParam>): void;
  loadDocument(doc: WorkflowDocument, source: string): void;
  currentDocument(): WorkflowDocument;
  historyRevision: number;
  onRunRecord(record: api.RunRecord): void;
  onSavedToLibrary(): void;
  say(text: string, error?: boolean): void;
  fail(error: unknown): void;
}

function Palette({ catalog, addNode }: Pick<Props, "catalog" | "addNode">) {
  const { colours } = useContext(EditorContext);
  const [query, setQuery] = useState("");
  const [open, setOpen] = useState<string | null>(null);
  const groups = useMemo(() => {
    const q = query.trim().toLowerCase();
    const byCategory = new Map<string, string[]>();
    for (const spec of Object.values(catalog)) {
      const text = `${spec.type} ${spec.category} ${spec.doc ?? ""}`.toLowerCase();
      if (q && !text.includes(q)) continue;
      byCategory.set(spec.category, [...(byCategory.get(spec.category) ?? []), spec.type]);
    }
    return [...byCategory.entries()].sort(([a], [b]) => a.localeCompare(b));
  }, [catalog, query]);
  return (
    <div className="palette">
      <input
        type="search"
        placeholder="Search nodes…"
        aria-label="search nodes"
        data-testid="palette-search"
        value={query}
        onChange={(e) => setQuery(e.target.value)}
      />
      {groups.length === 0 && <p className="muted">No node matches “{query}”.</p>}
      {groups.map(([category, types]) => (
        <div key={category} className="palette-group">
          <h4>{category}</h4>
          {types.sort().map((type) => {
            const spec = catalog[type];
            return (
              <div key={type} className="palette-entry">
                <button
                  draggable
                  data-testid={`palette-${type}`}
                  onDragStart={(e) => e.dataTransfer.setData("application/diffgraph-node", type)}
                  onClick={() => addNode(type)}
                  title="Click or drag onto the canvas to add"
                >
                  <span className="swatch" style={{ background: spec.outputs[0]?.colour ?? colourOf(colours, spec.outputs[0]?.type) }} />
                  {type}
                </button>
                <button className="icon" aria-label={`about ${type}`} onClick={() => setOpen(open === type ? null : type)}>
                  ?
                </button>
                {open === type && (
                  <div className="palette-doc">
                    <p>{spec.doc || "No description."}</p>
                    {spec.inputs.length > 0 && <p>Inputs: {spec.inputs.map((p) => `${p.name} (${p.type})`).join(", ")}</p>}
                    {spec.params.length > 0 && <p>Params: {spec.params.map((p) => `${p.name} (${p.type})`).join(", ")}</p>}
                    {spec.outputs.length > 0 && <p>Outputs: {spec.outputs.map((p) => `${p.name} (${p.type})`).join(", ")}</p>}
                  </div>
                )}
              </div>
            );
          })}
        </div>
      ))}
    </div>
  );
}

/** An image template param: upload, preview, and (for the picture a mask goes with) the painter. */
function TemplateImage({ name, value, set, maskParam, setTemplateParam }: {
  name: string;
  value: unknown;
  set(v: unknown): void;
  /** the template param the painted mask goes to, if this workflow has one */
  maskParam?: string;
  setTemplateParam: Props["setTemplateParam"];
}) {
  const upload = useUpload(value, set);
  const actions = useContext(EditorContext);
  return (
    <span className="template-image">
      <span className="row">
        <input value={upload.text} aria-label={name} onChange={(e) => set(e.target.value)} />
        <button data-testid={`upload-${name}`} onClick={upload.choose}>
          Upload…
        </button>
      </span>
      <input ref={upload.input} type="file" accept="image/*" hidden data-testid={`upload-input-${name}`} onChange={upload.onFileChosen} />
      {upload.thumb ? <img className="thumbnail" data-testid={`preview-${name}`} src={upload.thumb} alt={`${name} preview`} onError={upload.onThumbnailError} /> : null}
      {upload.thumb && maskParam && (
        <button data-testid={`paint-${maskParam}`} onClick={() => upload.setPainting(true)}>
          Paint {maskParam}…
        </button>
      )}
      {upload.painting && upload.thumb && maskParam &&
        createPortal(
          <Suspense fallback={null}>
            <MaskPainter
              src={upload.thumb}
              output="luminance"
              onClose={() => upload.setPainting(false)}
              onSave={async (file) => setTemplateParam(maskParam, { default: await actions.upload(file) })}
            />
          </Suspense>,
          document.body,
        )}
      {upload.error && <span className="node-error">{upload.error}</span>}
    </span>
  );
}

function TemplateParams({ base, hints, setTemplateParam }: Pick<Props, "base" | "hints" | "setTemplateParam">) {
  const params = Object.entries(base.params ?? {});
  const maskParam = Object.keys(hints).find((name) => hints[name].mask);
  if (params.length === 0) return <p className="muted">This workflow declares no template params.</p>;
  return (
    <div className="template-params">
      <p className="muted">Defaults of the workflow's params (what `$name` in a node refers to).</p>
      {params.map(([name, decl]) => {
        const value = decl?.default;
        const set = (v: unknown) => setTemplateParam(name, { default: v });
        const number = decl?.type === "INT" || decl?.type === "FLOAT";
        const hint = hints[name] ?? {};
        const choices = decl?.choices ?? null;
        const kind = modelKind(hint.widget);
        return (
          <label key={name} className="template-param" data-testid={`template-param-${name}`}>
            <span>
              {name} <small>{decl?.type}</small>
            </span>
            {kind !== null && !choices ? (
              <ModelInput name={name} kind={kind} value={value} onChange={set} />
            ) : choices ? (
              <select value={String(value ?? "")} onChange={(e) => set(e.target.value)}>
                {!choices.includes(String(value ?? "")) && <option value={String(value ?? "")}>{String(value ?? "")}</option>}
                {choices.map((c) => (
                  <option key={c}>{c}</option>
                ))}
              </select>
            ) : hint.widget === "upload" ? (
              <TemplateImage
                name={name}
                value={value}
                set={set}
                maskParam={hint.mask ? undefined : maskParam}
                setTemplateParam={setTemplateParam}
              />
            ) : decl?.type === "BOOLEAN" ? (
              <input type="checkbox" checked={value === true} onChange={(e) => set(e.target.checked)} />
            ) : number ? (
              <span className="row">
                <input
                  type="number"
                  min={decl.min}
                  max={decl.max}
                  step={decl.type === "INT" ? 1 : "any"}
                  value={value === undefined || value === null ? "" : String(value)}
                  onChange={(e) => {
                    const parsed = Number(e.target.value);
                    if (e.target.value !== "" && Number.isFinite(parsed)) set(decl.type === "INT" ? Math.trunc(parsed) : parsed);
                  }}
                />
                {hint.widget === "seed" && decl.type === "INT" && (
                  <button className="icon" title="Randomize the seed" onClick={() => set(Math.floor(Math.random() * 2 ** 32))}>
                    rnd
                  </button>
                )}
              </span>
            ) : (
              <textarea rows={hint.multiline ? 3 : 1} value={String(value ?? "")} onChange={(e) => set(e.target.value)} />
            )}
            {decl?.description && <small className="muted">{decl.description}</small>}
          </label>
        );
      })}
    </div>
  );
}

function Templates({ loadDocument, fail }: Pick<Props, "loadDocument" | "fail">) {
  const [templates, setTemplates] = useState<api.TemplateEntry[] | null>(null);
  useEffect(() => {
    api.fetchTemplates().then(setTemplates).catch((e) => {
      setTemplates([]);
      fail(e);
    });
  }, [fail]);
  if (templates === null) return <p className="muted">Loading templates…</p>;
  if (templates.length === 0) return <p className="muted">The server has no templates.</p>;
  return (
    <div className="gallery">
      {templates.map((t) => (
        <button
          key={t.name}
          className="gallery-card"
          data-testid={`template-${t.name}`}
          onClick={() => {
            try {
              const doc = t.workflow ?? t.document ?? (t.nodes ? (t as unknown as WorkflowDocument) : null);
              if (!doc) throw new Error(`template ${t.name} came without its document`);
              loadDocument(doc, `template ${t.name}`);
            } catch (e) {
              fail(e);
            }
          }}
        >
          <strong>{t.name}</strong>
          <span>{t.description ?? (t.workflow as WorkflowDocument | undefined)?.description ?? ""}</span>
        </button>
      ))}
    </div>
  );
}

function Library({ base, loadDocument, currentDocument, onSavedToLibrary, say, fail }: Pick<Props, "base" | "loadDocument" | "currentDocument" | "onSavedToLibrary" | "say" | "fail">) {
  const [entries, setEntries] = useState<api.LibraryEntry[] | null>(null);
  const [name, setName] = useState(String(base.name ?? "untitled"));
  const refresh = () => api.fetchLibrary().then(setEntries).catch((e) => { setEntries([]); fail(e); });
  useEffect(() => {
    refresh();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return (
    <div className="library">
      <div className="row">
        <input aria-label="library name" data-testid="library-name" value={name} onChange={(e) => setName(e.target.value)} />
        <button
          data-testid="library-save"
          onClick={async () => {
            try {
              await api.saveToLibrary(name, currentDocument());
              say(`Saved “${name}” to the server's library.`);
              onSavedToLibrary();
              refresh();
            } catch (e) {
              fail(e);
            }
          }}
        >
          Save
        </button>
      </div>
      {entries === null && <p className="muted">Loading…</p>}
      {entries?.length === 0 && <p className="muted">The library is empty.</p>}
      {entries?.map((entry) => (
        <div key={entry.name} className="row library-entry">
          <button
            className="grow"
            onClick={async () => {
              try {
                loadDocument(await api.fetchSaved(entry.name), `library workflow ${entry.name}`);
              } catch (e) {
                fail(e);
              }
            }}
          >
            {entry.name}
          </button>
          <button
            className="icon"
            aria-label={`delete ${entry.name}`}
            onClick={async () => {
              if (!window.confirm(`Delete “${entry.name}” from the library?`)) return;
              try {
                await api.deleteFromLibrary(entry.name);
                refresh();
              } catch (e) {
                fail(e);
              }
            }}
          >
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

/** A server time (UTC ISO) in the user's own time zone and words. */
export function localTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? iso : when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function History({ historyRevision, onRunRecord, fail }: Pick<Props, "historyRevision" | "onRunRecord" | "fail">) {
  const [runs, setRuns] = useState<api.RunRecord[] | null>(null);
  useEffect(() => {
    api.fetchRuns().then(setRuns).catch((e) => { setRuns([]); fail(e); });
  }, [historyRevision, fail]);
  if (runs === null) return <p className="muted">Loading…</p>;
  if (runs.length === 0) return <p className="muted">No runs yet.</p>;
  return (
    <div className="history" data-testid="history">
      {runs.map((r) => {
        const first = Object.values(r.outputs ?? {}).flat().find((n) => /\.(png|jpe?g|webp)$/i.test(n));
        return (
          <button
            key={r.id}
            className={`history-entry status-${r.status}`}
            onClick={async () => {
              try {
                onRunRecord(await api.fetchRun(r.id));
              } catch (e) {
                fail(e);
              }
            }}
          >
            {first && <img src={outputUrl(first)} alt="" />}
            <span>
              <strong>{r.name ?? r.id}</strong> <em>{r.status}</em>
              <br />
              <small data-testid="run-time" title={r.created_at ?? ""}>{localTime(r.created_at)}</small>
              {r.error && <small className="error-text"> {r.error}</small>}
            </span>
          </button>
        );
      })}
    </div>
  );
}

const IMAGE = /\.(png|jpe?g|webp|gif)$/i;

/** Every image of the recent runs, newest first; a click opens the full-size viewer. */
function Gallery({ historyRevision, fail }: Pick<Props, "historyRevision" | "fail">) {
  const [images, setImages] = useState<{ url: string; run: string; when: string }[] | null>(null);
  const [open, setOpen] = useState<number | null>(null);
  useEffect(() => {
    api
      .fetchRuns()
      .then((runs) =>
        setImages(
          runs.flatMap((r) =>
            Object.values(r.outputs ?? {})
              .flat()
              .filter((name) => IMAGE.test(name))
              .map((name) => ({ url: outputUrl(name), run: r.name ?? r.id, when: localTime(r.created_at) })),
          ),
        ),
      )
      .catch((e) => {
        setImages([]);
        fail(e);
      });
  }, [historyRevision, fail]);
  if (images === null) return <p className="muted">Loading…</p>;
  if (images.length === 0) return <p className="muted">No pictures yet: the images your runs make show here.</p>;
  return (
    <div className="gallery-grid" data-testid="gallery">
      {images.map((image, i) => (
        <button key={image.url} className="gallery-thumb" title={`${image.run}, ${image.when}`} onClick={() => setOpen(i)}>
          <img src={image.url} alt={`output of ${image.run}`} loading="lazy" />
        </button>
      ))}
      {open !== null &&
        createPortal(
          <ImageViewer images={images} index={open} setIndex={setOpen} close={() => setOpen(null)} />,
          document.body,
        )}
    </div>
  );
}

function ImageViewer({ images, index, setIndex, close }: {
  images: { url: string; run: string; when: string }[];
  index: number;
  setIndex(i: number): void;
  close(): void;
}) {
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") close();
      else if (e.key === "ArrowRight") setIndex(Math.min(index + 1, images.length - 1));
      else if (e.key === "ArrowLeft") setIndex(Math.max(index - 1, 0));
      else return;
      e.preventDefault();
      e.stopPropagation();
    };
    window.addEventListener("keydown", onKey, true);
    return () => window.removeEventListener("keydown", onKey, true);
  }, [close, images.length, index, setIndex]);
  const image = images[index];
  return (
    <div className="modal viewer" role="dialog" aria-label="image viewer" data-testid="viewer" onClick={close}>
      <div className="modal-body" onClick={(e) => e.stopPropagation()}>
        <img className="full" src={image.url} alt={`output of ${image.run}`} data-testid="viewer-image" />
        <div className="row">
          <button onClick={() => setIndex(Math.max(index - 1, 0))} disabled={index === 0} aria-label="previous">
            ‹
          </button>
          <span className="grow">
            {image.run} · {image.when} · {index + 1}/{images.length}
          </span>
          <a href={image.url} download>
            Download
          </a>
          <button onClick={() => setIndex(Math.min(index + 1, images.length - 1))} disabled={index === images.length - 1} aria-label="next">
            ›
          </button>
          <button onClick={close}>Close</button>
        </div>
      </div>
    </div>
  );
}

export function Sidebar(props: Props) {
  const [tab, setTab] = useState<Tab>("nodes");
  const tabs: [Tab, string][] = [
    ["nodes", "Nodes"],
    ["params", "Params"],
    ["templates", "Templates"],
    ["library", "Library"],
    ["history", "History"],
    ["gallery", "Gallery"],
  ];
  return (
    <aside className="sidebar">
      <nav className="tabs">
        {tabs.map(([id, label]) => (
          <button key={id} data-testid={`tab-${id}`} className={tab === id ? "active" : ""} onClick={() => setTab(id)}>
            {label}
          </button>
        ))}
      </nav>
      <div className="tab-body">
        {tab === "nodes" && <Palette catalog={props.catalog} addNode={props.addNode} />}
        {tab === "params" && <TemplateParams base={props.base} hints={props.hints} setTemplateParam={props.setTemplateParam} />}
        {tab === "templates" && <Templates loadDocument={props.loadDocument} fail={props.fail} />}
        {tab === "library" && <Library {...props} />}
        {tab === "history" && <History {...props} />}
        {tab === "gallery" && <Gallery historyRevision={props.historyRevision} fail={props.fail} />}
      </div>
    </aside>
  );
}
