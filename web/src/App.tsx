// The editor: one document reducer, the run connection hook, and the views around the canvas.

import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type FinalConnectionState,
  type IsValidConnection,
  type NodeChange,
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import * as api from "./api";
import { emptyWorkflow, freshId, graphToWorkflow, workflowToGraph, type DgEdge, type DgNode, type Graph } from "./convert";
import { editorReducer, GROUP_PREFIX, groupsOf, initialState, renameProblem, seedTargets, selection, type Doc, type NodeFlag } from "./document";
import { runnableDocument } from "./runnable";
import { FrameNode, type FrameNodeType } from "./FrameNode";
import { colourOf, EditorContext, GraphNode, ModelsContext, TypedEdge, type EditorActions } from "./GraphNode";
import { compatibleNodes, portSpec, portType, typeColours, whyRefused } from "./graphRules";
import { estimateHeight, layoutPositions, NODE_WIDTH } from "./layout";
import { NodeSearch, type SearchRequest } from "./NodeSearch";
import { canvasNodeId, createStores, StoresContext } from "./nodeStatus";
import { Notifications, type Message } from "./Notifications";
import { isPng, readEmbeddedWorkflow } from "./png";
import { showRunRecord } from "./runEvents";
import { Sidebar } from "./Sidebar";
import { subgraphSpec } from "./subgraphs";
import { templateParamHints } from "./templateParams";
import { ShortcutsHelp, Toolbar, type SeedControl } from "./Toolbar";
import type { Catalog, Issue, TemplateParam, WorkflowDocument } from "./types";
import { prefetch, templateDocument } from "./startup";
import { useRunConnection } from "./useRunConnection";
import { useShortcuts } from "./useShortcuts";
import { readWorkingGraph, useWorkingGraph } from "./useWorkingGraph";

const nodeTypes = { dg: GraphNode, frame: FrameNode };
const edgeTypes = { typed: TypedEdge };

/** The template a first visit opens, as ComfyUI opens its default graph. */
const LANDING_TEMPLATE = "txt2img";

function download(filename: string, text: string, mime: string) {
  const url = URL.createObjectURL(new Blob([text], { type: mime }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function Editor() {
  const flow = useReactFlow<DgNode, DgEdge>();
  const stores = useMemo(createStores, []);
  const [catalog, setCatalog] = useState<Catalog>({});
  const [catalogLoaded, setCatalogLoaded] = useState(false);
  const [models, setModels] = useState<string[]>([]);
  const [state, dispatch] = useReducer(editorReducer, workflowToGraph(emptyWorkflow()), initialState);
  const { base, nodes, edges } = state.doc;
  const [message, setMessage] = useState<Message | null>(null);
  const [workflowIssues, setWorkflowIssues] = useState<Issue[]>([]);
  const [ready, setReady] = useState(false);
  const [search, setSearch] = useState<(SearchRequest & { at: { x: number; y: number }; from?: { node: string; handle: string; side: "source" | "target" } }) | null>(null);
  const [help, setHelp] = useState(false);
  const [queueCount, setQueueCount] = useState(1);
  const [seedControl, setSeedControl] = useState<SeedControl>("fixed");
  const queued = useRef(0);
  const clipboard = useRef<{ nodes: DgNode[]; edges: DgEdge[] } | null>(null);
  const thumbnails = useRef(new Map<string, string>());
  const latest = useRef(state);
  latest.current = state;
  const doc = useCallback((): Doc => latest.current.doc, []);
  const colours = useMemo(() => typeColours(catalog), [catalog]);
  const hints = useMemo(() => templateParamHints({ nodes, edges }, catalog), [nodes, edges, catalog]);

  const say = useCallback((text: string, error = false) => setMessage((m) => ({ text, error, id: (m?.id ?? 0) + 1 })), []);
  const fail = useCallback((error: unknown) => say(api.errorText(error), true), [say]);

  const currentDocument = useCallback((): WorkflowDocument => graphToWorkflow(doc() as Graph), [doc]);

  // -- validation: errors show on the nodes before anything runs -------------------------------
  const showIssues = useCallback(
    (issues: Issue[]) => {
      stores.status.clear("issues");
      const byNode = new Map<string, Issue[]>();
      const general: Issue[] = [];
      const ids = new Set(doc().nodes.map((n) => n.id));
      for (const issue of issues) {
        const id = issue.node ? canvasNodeId(issue.node) : null;
        if (id && ids.has(id)) byNode.set(id, [...(byNode.get(id) ?? []), issue]);
        else general.push(issue);
      }
      for (const [id, list] of byNode) stores.status.update(id, { issues: list });
      setWorkflowIssues(general);
    },
    [doc, stores],
  );

  // -- the run connection ----------------------------------------------------------------------
  const runAgain = useRef<() => void>(() => {});
  const connection = useRunConnection({
    stores,
    edges: () => doc().edges,
    nodeIds: () => doc().nodes.map((n) => n.id),
    say,
    showIssues,
    onRunEnd: (status) => {
      if (status === "succeeded") {
        dispatch({ type: "advanceSeeds", control: seedControlRef.current, targets: seedTargets(doc(), catalogRef.current), random: Math.floor(Math.random() * 2 ** 32) });
      }
      if (status === "succeeded" && queued.current > 0) setTimeout(() => runAgain.current(), 0);
      else queued.current = 0;
    },
  });
  const seedControlRef = useRef(seedControl);
  seedControlRef.current = seedControl;
  const catalogRef = useRef(catalog);
  catalogRef.current = catalog;

  const run = useCallback(async () => {
    if (connection.runId) {
      say("A run is already in progress; cancel it first.", true);
      return;
    }
    queued.current = queueCount - 1;
    const runnable = () => {
      const { document: sent, skipped } = runnableDocument(currentDocument(), catalogRef.current);
      if (skipped.length > 0) console.info("left out of the run:", skipped);
      return sent;
    };
    runAgain.current = () => {
      queued.current -= 1;
      // the seed control has been applied to the document by now (one render later)
      requestAnimationFrame(() => connection.run(runnable()));
    };
    await connection.run(runnable());
  }, [connection, currentDocument, queueCount, say]);

  const cancel = useCallback(() => {
    queued.current = 0;
    connection.cancel();
  }, [connection]);

  // -- loading documents ------------------------------------------------------------------------
  const loadDocument = useCallback(
    (document_: WorkflowDocument, source: string, opts: { keepHistory?: boolean; fit?: boolean; unsaved?: boolean; quiet?: boolean } = {}) => {
      if (typeof document_ !== "object" || document_ === null || Array.isArray(document_)) {
        say(`${source}: a workflow is a mapping (format, nodes, ...)`, true);
        return;
      }
      let graph: Graph;
      try {
        graph = workflowToGraph(document_, catalog);
      } catch (error) {
        say(`${source} cannot be drawn: ${(error as Error).message}`, true);
        return;
      }
      performance.mark("diffgraph:document");
      stores.status.clear("all");
      dispatch({ type: "load", graph, keepHistory: opts.keepHistory, unsaved: opts.unsaved });
      if (opts.fit !== false) {
        // place the viewport before the first paint so a big graph renders once, at the right detail
        const canvas = document.querySelector(".canvas")?.getBoundingClientRect();
        if (canvas && graph.nodes.length > 0) {
          let [left, top, right, bottom] = [Infinity, Infinity, -Infinity, -Infinity];
          for (const n of graph.nodes) {
            left = Math.min(left, n.position.x);
            top = Math.min(top, n.position.y);
            right = Math.max(right, n.position.x + NODE_WIDTH);
            bottom = Math.max(bottom, n.position.y + estimateHeight(n.data.type, n.data.params, catalog));
          }
          const [width, height] = [right - left, bottom - top];
          const zoom = Math.max(0.05, Math.min(1, (0.9 * canvas.width) / width, (0.9 * canvas.height) / height));
          flow.setViewport({ x: (canvas.width - width * zoom) / 2 - left * zoom, y: (canvas.height - height * zoom) / 2 - top * zoom, zoom });
        }
        // (an empty graph is not fitted: React Flow would keep the request and zoom on the first node added)
        if (graph.nodes.length > 0) requestAnimationFrame(() => flow.fitView({ padding: 0.1, maxZoom: 1 }));
      }
      if (!opts.quiet) say(`Opened ${source}.`);
    },
    [catalog, flow, say, stores],
  );

  const upload = useCallback(async (file: File) => {
    const saved = await api.uploadImage(file);
    const value = saved.name;
    thumbnails.current.set(value, URL.createObjectURL(file));
    return value;
  }, []);

  /** A free place for a new node inside the visible canvas: the centre, else the nearest free
   * slot of a grid over the view (never off screen, never on top of another node). */
  const freePlaceInView = useCallback((): { x: number; y: number } => {
    const box = document.querySelector(".canvas")?.getBoundingClientRect() ?? new DOMRect(0, 0, window.innerWidth, window.innerHeight);
    const topLeft = flow.screenToFlowPosition({ x: box.left, y: box.top });
    const bottomRight = flow.screenToFlowPosition({ x: box.right, y: box.bottom });
    const centre = { x: (topLeft.x + bottomRight.x) / 2 - NODE_WIDTH / 2, y: (topLeft.y + bottomRight.y) / 2 - 80 };
    const [width, height] = [NODE_WIDTH + 30, 180];
    const free = (x: number, y: number) =>
      !doc().nodes.some((n) => {
        const h = n.measured?.height ?? 160;
        const w = n.measured?.width ?? NODE_WIDTH;
        return x < n.position.x + w + 10 && n.position.x < x + width && y < n.position.y + h + 10 && n.position.y < y + height;
      });
    const slots: { x: number; y: number }[] = [];
    for (let y = topLeft.y + 20; y + height <= bottomRight.y; y += height / 2) {
      for (let x = topLeft.x + 20; x + width <= bottomRight.x; x += width / 2) slots.push({ x, y });
    }
    const distance = (p: { x: number; y: number }) => Math.hypot(p.x - centre.x, p.y - centre.y);
    if (free(centre.x, centre.y)) return centre;
    const best = slots.filter((p) => free(p.x, p.y)).sort((a, b) => distance(a) - distance(b))[0];
    return best ?? centre;
  }, [doc, flow]);

  const addNode = useCallback(
    (type: string, position?: { x: number; y: number }, params?: Record<string, unknown>): string => {
      const id = freshId(type, new Set(doc().nodes.map((n) => n.id)));
      const at = position ?? freePlaceInView();
      dispatch({ type: "add", nodeType: type, position: at, id });
      if (params) for (const [name, value] of Object.entries(params)) dispatch({ type: "setParam", node: id, name, value, at: Date.now() });
      return id;
    },
    [doc, freePlaceInView],
  );

  const openFile = useCallback(
    async (file: File, dropAt?: { x: number; y: number }) => {
      try {
        const bytes = new Uint8Array(await file.arrayBuffer());
        if (isPng(bytes)) {
          const embedded = await readEmbeddedWorkflow(bytes).catch(() => null);
          if (embedded) {
            const opened = structuredClone(embedded.workflow);
            // the image was made with these template param values: make them the defaults
            for (const [name, value] of Object.entries(embedded.params)) {
              const declared = opened.params?.[name];
              if (declared && typeof declared === "object") declared.default = value;
            }
            loadDocument(opened, file.name);
            return;
          }
        }
        if (file.type.startsWith("image/") || isPng(bytes)) {
          // a plain picture: upload it and load it with a LoadImage node
          const value = await upload(file);
          const id = addNode("LoadImage", dropAt, { image: value });
          say(`Uploaded ${file.name} into a new LoadImage node ${id}.`);
          return;
        }
        const text = new TextDecoder().decode(bytes);
        let parsed: unknown;
        try {
          // YAML is loaded on first use: most sessions never open a file
          parsed = (await import("yaml")).parse(text);
        } catch (error) {
          throw new Error(`${file.name} is not valid YAML or JSON: ${(error as Error).message}`);
        }
        loadDocument(parsed as WorkflowDocument, file.name);
      } catch (error) {
        fail(error);
      }
    },
    [addNode, fail, loadDocument, say, upload],
  );

  // -- catalog and startup ----------------------------------------------------------------------
  useEffect(() => {
    let cancelled = false;
    (async () => {
      try {
        const [loaded, templates] = await prefetch().catalog;
        if (cancelled) return;
        performance.mark("diffgraph:catalog");
        if (templates instanceof Error) fail(templates);
        // each template is also a node that runs it as a subgraph
        for (const entry of templates instanceof Error ? [] : templates) {
          const templateDoc = entry.document ?? entry.workflow;
          if (templateDoc) {
            const spec = subgraphSpec(entry.name, templateDoc, loaded);
            loaded[spec.type] = spec;
          }
        }
        setCatalog(loaded);
      } catch (error) {
        fail(error);
      } finally {
        if (!cancelled) setCatalogLoaded(true);
      }
    })();
    prefetch().models.then((names) => !cancelled && setModels(names));
    return () => {
      cancelled = true;
    };
  }, [fail]);

  // the document named in the URL is fetched while the catalog loads, not after it
  const startupDocument = useRef<Promise<[WorkflowDocument, string] | null> | null>(null);
  if (startupDocument.current === null) startupDocument.current = prefetch().document;
  const startupDone = useRef(false);
  useEffect(() => {
    if (startupDone.current || !catalogLoaded) return;
    startupDone.current = true;
    (async () => {
      try {
        const opened = await startupDocument.current;
        const working = opened ? null : readWorkingGraph();
        if (opened) loadDocument(opened[0], opened[1], { keepHistory: false });
        else if (working) loadDocument(working.document, "your last working graph", { keepHistory: false, unsaved: working.unsaved, quiet: true });
        else {
          const landing = (await prefetch().catalog)[1];
          const entry = landing instanceof Error ? undefined : landing.find((t) => t.name === LANDING_TEMPLATE);
          if (entry) loadDocument(templateDocument(entry), `template ${LANDING_TEMPLATE}`, { keepHistory: false });
        }
      } catch (error) {
        fail(error);
      } finally {
        setReady(true);
      }
    })();
  }, [catalogLoaded, fail, loadDocument]);

  // ready once the loaded graph has been painted: the benchmark and the e2e tests wait for it
  useEffect(() => {
    if (!ready) return;
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        performance.mark("diffgraph:ready");
        document.body.dataset.ready = "true";
      }),
    );
  }, [ready]);

  // the working graph is kept in this browser, so a reload (or a crash) loses nothing
  const unsaved = state.saved !== state.cleanAt;
  useWorkingGraph(ready, state.saved, unsaved, currentDocument);

  useEffect(() => stores.links.setEdges(edges), [edges, stores]);

  useEffect(() => {
    if (state.revision === 0 || Object.keys(catalog).length === 0) return;
    const timer = setTimeout(async () => {
      try {
        const result = await api.validateWorkflow(currentDocument());
        showIssues(result.errors);
        // loaders show their model's family; an invalid workflow keeps the last ones known
        if (result.valid) for (const node of doc().nodes) {
          if (stores.status.get(node.id).family !== result.families[node.id]) stores.status.update(node.id, { family: result.families[node.id] });
        }
      } catch (error) {
        fail(error);
      }
    }, 400);
    return () => clearTimeout(timer);
  }, [state.revision, catalog, currentDocument, showIssues, fail, doc, stores]);

  // -- editing ---------------------------------------------------------------------------------
  const setParam = useCallback((node: string, name: string, value: unknown) => dispatch({ type: "setParam", node, name, value, at: Date.now() }), []);

  const renameNode = useCallback(
    (from: string, to: string): string | null => {
      const why = renameProblem(doc(), from, to);
      if (why) return why;
      if (to.trim() === from) return null;
      dispatch({ type: "rename", from, to });
      stores.status.update(from, { issues: [], state: undefined, images: [] });
      return null;
    },
    [doc, stores],
  );

  const toggleFlag = useCallback(
    (id: string, flag: NodeFlag) => {
      const node = doc().nodes.find((n) => n.id === id);
      dispatch({ type: "setNodeFlag", ids: [id], flag, value: node?.data.metadata?.[flag] !== true });
    },
    [doc],
  );

  /** Ctrl+M / Ctrl+B: flag every selected node, or clear the flag if all have it. */
  const toggleSelected = useCallback(
    (flag: NodeFlag) => {
      const chosen = doc().nodes.filter((n) => n.selected);
      if (chosen.length === 0) return;
      const value = !chosen.every((n) => n.data.metadata?.[flag] === true);
      dispatch({ type: "setNodeFlag", ids: chosen.map((n) => n.id), flag, value });
    },
    [doc],
  );

  const renameGroup = useCallback((id: string, title: string) => dispatch({ type: "renameGroup", id, title }), []);
  const removeGroup = useCallback((id: string) => dispatch({ type: "groupChange", changes: [{ type: "remove", id: `${GROUP_PREFIX}${id}` }] }), []);

  const actions: EditorActions = useMemo(
    () => ({ catalog, colours, setParam, renameNode, toggleFlag, renameGroup, removeGroup, upload, thumbnail: (value: string) => thumbnails.current.get(value) }),
    [catalog, colours, setParam, renameNode, toggleFlag, renameGroup, removeGroup, upload],
  );


  /** Ctrl+G: a group framing the selected nodes. */
  const groupSelected = useCallback(() => {
    const chosen = doc().nodes.filter((n) => n.selected);
    if (chosen.length === 0) return;
    const sizes = Object.fromEntries(chosen.map((n) => [n.id, { width: n.measured?.width ?? NODE_WIDTH, height: n.measured?.height ?? 160 }]));
    dispatch({ type: "group", ids: chosen.map((n) => n.id), title: "Group", sizes });
  }, [doc]);

  // groups are drawn as frames behind the nodes; they are not workflow nodes
  const groups = useMemo(() => groupsOf(base), [base]);
  const frames = useMemo(
    (): FrameNodeType[] =>
      groups.map((g) => ({
        id: `${GROUP_PREFIX}${g.id}`,
        type: "frame",
        position: { x: g.x, y: g.y },
        data: { title: g.title, groupId: g.id },
        style: { width: g.width, height: g.height },
        width: g.width,
        height: g.height,
        zIndex: -1,
        selectable: false,
        dragHandle: ".frame-title",
      })),
    [groups],
  );
  const flowNodes = useMemo(() => (frames.length > 0 ? [...(frames as unknown as DgNode[]), ...nodes] : nodes), [frames, nodes]);

  const onNodesChange = useCallback((changes: NodeChange<DgNode>[]) => {
    const isFrame = (c: NodeChange<DgNode>) => "id" in c && c.id.startsWith(GROUP_PREFIX);
    const frameChanges = changes.filter(isFrame);
    if (frameChanges.length > 0) dispatch({ type: "groupChange", changes: frameChanges as NodeChange[] });
    const rest = frameChanges.length > 0 ? changes.filter((c) => !isFrame(c)) : changes;
    if (rest.length > 0) dispatch({ type: "nodesChange", changes: rest });
  }, []);
  const onEdgesChange = useCallback((changes: EdgeChange<DgEdge>[]) => dispatch({ type: "edgesChange", changes }), []);

  const refusal = useCallback((c: Connection | DgEdge) => whyRefused(catalog, doc().nodes, doc().edges, c), [catalog, doc]);
  const isValidConnection: IsValidConnection<DgEdge> = useCallback((c) => refusal(c) === null, [refusal]);

  const connect = useCallback(
    (c: Connection) => {
      if (refusal(c)) return;
      const linkType = portType(catalog, doc().nodes.find((n) => n.id === c.source)?.data.type, c.sourceHandle, "source");
      dispatch({ type: "connect", link: c, linkType });
    },
    [catalog, doc, refusal],
  );

  const describePort = useCallback(
    (node: string, handle: string | null | undefined, kind: "source" | "target") =>
      `${node}.${handle} (${portType(catalog, doc().nodes.find((n) => n.id === node)?.data.type, handle, kind) ?? "?"})`,
    [catalog, doc],
  );

  const onConnectEnd = useCallback(
    (event: MouseEvent | TouchEvent, c: FinalConnectionState) => {
      if (c.isValid || !c.fromHandle) return;
      if (!c.toHandle) {
        // dropped on empty canvas: offer the nodes that can take this link, then wire the chosen one
        const target = event.target as HTMLElement | null;
        if (!target?.classList.contains("react-flow__pane")) return;
        const point = "changedTouches" in event ? event.changedTouches[0] : event;
        const fromType = c.fromHandle.nodeId ? doc().nodes.find((n) => n.id === c.fromHandle!.nodeId)?.data.type : undefined;
        const side = c.fromHandle.type;
        const spec = portSpec(catalog, fromType, c.fromHandle.id, side);
        if (!spec) return;
        const offers = side === "source" ? compatibleNodes(catalog, spec.type, "source") : compatibleNodes(catalog, spec.type, "target", spec.accepts ?? [spec.type]);
        setSearch({
          screen: { x: point.clientX, y: point.clientY },
          at: flow.screenToFlowPosition({ x: point.clientX, y: point.clientY }),
          offers,
          from: { node: c.fromHandle.nodeId, handle: c.fromHandle.id ?? "", side },
        });
        return;
      }
      const from = c.fromHandle.type === "source" ? c.fromHandle : c.toHandle;
      const to = c.fromHandle.type === "source" ? c.toHandle : c.fromHandle;
      const reason = refusal({ source: from.nodeId, sourceHandle: from.id ?? null, target: to.nodeId, targetHandle: to.id ?? null });
      if (reason) say(`Link refused: ${describePort(from.nodeId, from.id, "source")} → ${describePort(to.nodeId, to.id, "target")}: ${reason}.`, true);
    },
    [catalog, describePort, doc, flow, refusal, say],
  );

  const chooseFromSearch = useCallback(
    (nodeType: string, handle?: string) => {
      if (!search) return;
      const id = addNode(nodeType, search.at);
      const from = search.from;
      if (from && handle) {
        const link =
          from.side === "source"
            ? { source: from.node, sourceHandle: from.handle, target: id, targetHandle: handle }
            : { source: id, sourceHandle: handle, target: from.node, targetHandle: from.handle };
        const linkType = from.side === "source" ? portType(catalog, doc().nodes.find((n) => n.id === from.node)?.data.type, from.handle, "source") : catalog[nodeType]?.outputs.find((o) => o.name === handle)?.type;
        dispatch({ type: "connect", link, linkType });
      }
      setSearch(null);
    },
    [addNode, catalog, doc, search],
  );

  const copy = useCallback(() => {
    const chosen = selection(doc());
    if (chosen.nodes.length === 0) return;
    clipboard.current = chosen;
    say(`Copied ${chosen.nodes.length} node${chosen.nodes.length > 1 ? "s" : ""}.`);
  }, [doc, say]);

  const paste = useCallback(() => {
    const copied = clipboard.current;
    if (!copied) return;
    dispatch({ type: "paste", ...copied });
    // a second paste lands 40 px further on
    clipboard.current = { nodes: copied.nodes.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } })), edges: copied.edges };
  }, []);

  const autoLayout = useCallback(() => {
    dispatch({ type: "layout", positions: layoutPositions(doc().nodes, doc().edges, catalog) });
    requestAnimationFrame(() => flow.fitView({ padding: 0.1, maxZoom: 1 }));
  }, [catalog, doc, flow]);

  const setTemplateParam = useCallback((name: string, patch: Partial<TemplateParam>) => dispatch({ type: "setTemplateParam", name, patch, at: Date.now() }), []);

  const saveYaml = useCallback(async () => {
    const { stringify } = await import("yaml");
    download(`${doc().base.name || "workflow"}.yaml`, stringify(currentDocument()), "application/yaml");
    dispatch({ type: "markClean" });
  }, [currentDocument, doc]);

  const saveJson = useCallback(() => {
    download(`${doc().base.name || "workflow"}.json`, JSON.stringify(currentDocument(), null, 2) + "\n", "application/json");
    dispatch({ type: "markClean" });
  }, [currentDocument, doc]);

  useShortcuts({
    run,
    undo: () => dispatch({ type: "undo" }),
    redo: () => dispatch({ type: "redo" }),
    copy,
    paste,
    save: saveYaml,
    mute: () => toggleSelected("muted"),
    bypass: () => toggleSelected("bypassed"),
    group: groupSelected,
    toggleHelp: () => setHelp((h) => !h),
    escape: () => {
      setHelp(false);
      setSearch(null);
    },
  });

  // -- drag and drop: palette entries and files ------------------------------------------------
  const onDrop = useCallback(
    (e: React.DragEvent) => {
      e.preventDefault();
      const at = flow.screenToFlowPosition({ x: e.clientX, y: e.clientY });
      const type = e.dataTransfer.getData("application/diffgraph-node");
      if (type) {
        addNode(type, at);
        return;
      }
      const file = e.dataTransfer.files?.[0];
      if (file) openFile(file, at);
    },
    [addNode, flow, openFile],
  );

  const onPaneDoubleClick = useCallback(
    (e: React.MouseEvent) => {
      if (!(e.target as HTMLElement).classList.contains("react-flow__pane")) return;
      setSearch({ screen: { x: e.clientX, y: e.clientY }, at: flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }) });
    },
    [flow],
  );

  const dismiss = useCallback(() => setMessage(null), []);

  return (
    <StoresContext.Provider value={stores}>
      <EditorContext.Provider value={actions}>
       <ModelsContext.Provider value={models}>
        <div className="app">
          <Toolbar
            name={String(base.name ?? "")}
            setName={(name) => dispatch({ type: "setName", name, at: Date.now() })}
            newWorkflow={() => loadDocument(emptyWorkflow(), "a new workflow")}
            openFile={(file) => openFile(file)}
            saveYaml={saveYaml}
            saveJson={saveJson}
            undo={() => dispatch({ type: "undo" })}
            redo={() => dispatch({ type: "redo" })}
            autoLayout={autoLayout}
            fitView={() => flow.fitView({ padding: 0.1, maxZoom: 1 })}
            running={!!connection.runId}
            run={run}
            cancel={cancel}
            queueCount={queueCount}
            setQueueCount={setQueueCount}
            seedControl={seedControl}
            setSeedControl={setSeedControl}
            showHelp={() => setHelp(true)}
          />
          <div className="main">
            <Sidebar
              catalog={catalog}
              base={base}
              hints={hints}
              addNode={(type) => addNode(type)}
              setTemplateParam={setTemplateParam}
              loadDocument={loadDocument}
              currentDocument={currentDocument}
              historyRevision={connection.historyRevision}
              onRunRecord={(record) => {
                if (record.workflow) loadDocument(record.workflow, `run ${record.id}`);
                showRunRecord(stores.status, record, doc().edges);
              }}
              onSavedToLibrary={() => dispatch({ type: "markClean" })}
              say={say}
              fail={fail}
            />
            <div className="canvas" onDragOver={(e) => e.preventDefault()} onDrop={onDrop} onDoubleClick={onPaneDoubleClick}>
              <Notifications message={message} issues={workflowIssues} dismiss={dismiss} />
              <ReactFlow<DgNode, DgEdge>
                nodes={flowNodes}
                edges={edges}
                nodeTypes={nodeTypes}
                edgeTypes={edgeTypes}
                onNodesChange={onNodesChange}
                onEdgesChange={onEdgesChange}
                onConnect={connect}
                onConnectEnd={onConnectEnd}
                isValidConnection={isValidConnection}
                onNodeDragStart={() => dispatch({ type: "checkpoint" })}
                deleteKeyCode={["Backspace", "Delete"]}
                multiSelectionKeyCode={["Control", "Meta", "Shift"]}
                zoomOnDoubleClick={false}
                minZoom={0.05}
                maxZoom={2}
                onlyRenderVisibleElements
                proOptions={{ hideAttribution: true }}
                defaultEdgeOptions={{ type: "typed" }}
              >
                <Background />
                <Controls />
                <MiniMap pannable zoomable nodeColor={(n) => (n.type === "frame" ? "#3a3d45" : colourOf(colours, catalog[(n as DgNode).data.type]?.outputs[0]?.type))} />
              </ReactFlow>
              {search && <NodeSearch catalog={catalog} request={search} choose={chooseFromSearch} close={() => setSearch(null)} />}
            </div>
          </div>
          {help && <ShortcutsHelp close={() => setHelp(false)} />}
        </div>
       </ModelsContext.Provider>
      </EditorContext.Provider>
    </StoresContext.Provider>
  );
}

export function App() {
  return (
    <ReactFlowProvider>
      <Editor />
    </ReactFlowProvider>
  );
}
