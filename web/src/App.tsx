// The editor: canvas, palette, workflow params, toolbar, history, and the run loop over /ws.

import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type FinalConnectionState,
  type IsValidConnection,
  type NodeChange,
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import * as api from "./api";
import { edgeId, emptyWorkflow, freshId, graphToWorkflow, workflowToGraph, type DgEdge, type DgNode, type Graph } from "./convert";
import { EditorContext, GraphNode, TypedEdge, typeColour, type EditorActions } from "./GraphNode";
import { estimateHeight, layoutPositions, NODE_WIDTH } from "./layout";
import { canvasNodeId, linkStore, statusStore } from "./nodeStatus";
import { isPng, readEmbeddedWorkflow } from "./png";
import { applyRunEvent, decodePreview, markUpstreamCached, showOutputs, showRunRecord, type RunEvent } from "./runEvents";
import { typeFeeds, type Catalog, type Issue, type TemplateParam, type WorkflowDocument } from "./types";
import { Sidebar } from "./Sidebar";
import { subgraphSpec } from "./subgraphs";

const nodeTypes = { dg: GraphNode };
const edgeTypes = { typed: TypedEdge };

interface Message {
  text: string;
  error: boolean;
}

interface Snapshot {
  base: WorkflowDocument;
  nodes: DgNode[];
  edges: DgEdge[];
}

const HISTORY_LIMIT = 100;

function portType(catalog: Catalog, nodeType: string | undefined, handle: string | null | undefined, kind: "source" | "target") {
  const spec = nodeType ? catalog[nodeType] : undefined;
  if (!spec || !handle) return undefined;
  if (kind === "source") return spec.outputs.find((p) => p.name === handle)?.type;
  return spec.inputs.find((p) => p.name === handle)?.type ?? spec.params.find((p) => p.name === handle)?.type;
}

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

function isEditable(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  return !!el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
}

function Editor() {
  const flow = useReactFlow<DgNode, DgEdge>();
  const [catalog, setCatalog] = useState<Catalog>({});
  const [catalogLoaded, setCatalogLoaded] = useState(false);
  const [base, setBase] = useState<WorkflowDocument>(() => workflowToGraph(emptyWorkflow()).base);
  const [nodes, setNodes] = useState<DgNode[]>([]);
  const [edges, setEdges] = useState<DgEdge[]>([]);
  const [message, setMessage] = useState<Message | null>(null);
  const [workflowIssues, setWorkflowIssues] = useState<Issue[]>([]);
  const [runId, setRunId] = useState<string | null>(null);
  const [revision, setRevision] = useState(0);
  const [historyRevision, setHistoryRevision] = useState(0);
  const [ready, setReady] = useState(false);
  const past = useRef<Snapshot[]>([]);
  const future = useRef<Snapshot[]>([]);
  const lastEdit = useRef<{ key: string; at: number } | null>(null);
  const clipboard = useRef<Snapshot | null>(null);
  const thumbnails = useRef(new Map<string, string>());
  const runRef = useRef<string | null>(null);
  const state = useRef({ base, nodes, edges });
  state.current = { base, nodes, edges };

  const say = useCallback((text: string, error = false) => setMessage({ text, error }), []);
  const fail = useCallback((error: unknown) => say((error as Error).message ?? String(error), true), [say]);

  // -- undo/redo ------------------------------------------------------------------------------
  const remember = useCallback((coalesceKey?: string) => {
    const now = Date.now();
    if (coalesceKey && lastEdit.current?.key === coalesceKey && now - lastEdit.current.at < 1500) {
      lastEdit.current.at = now;
      return;
    }
    lastEdit.current = coalesceKey ? { key: coalesceKey, at: now } : null;
    // one gesture can report several changes (a node and its edges removed): one undo step
    const top = past.current[past.current.length - 1];
    const { base, nodes, edges } = state.current;
    if (top && top.base === base && top.nodes === nodes && top.edges === edges) return;
    past.current.push({ base, nodes, edges });
    if (past.current.length > HISTORY_LIMIT) past.current.shift();
    future.current = [];
  }, []);

  const restore = useCallback((snapshot: Snapshot) => {
    setBase(snapshot.base);
    setNodes(snapshot.nodes);
    setEdges(snapshot.edges);
    setRevision((r) => r + 1);
  }, []);

  const undo = useCallback(() => {
    const snapshot = past.current.pop();
    if (!snapshot) return;
    future.current.push({ ...state.current });
    lastEdit.current = null;
    restore(snapshot);
  }, [restore]);

  const redo = useCallback(() => {
    const snapshot = future.current.pop();
    if (!snapshot) return;
    past.current.push({ ...state.current });
    lastEdit.current = null;
    restore(snapshot);
  }, [restore]);

  // -- loading documents ------------------------------------------------------------------------
  const loadDocument = useCallback(
    (doc: WorkflowDocument, source: string, opts: { keepHistory?: boolean; fit?: boolean } = {}) => {
      if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
        say(`${source}: a workflow is a mapping (format, nodes, ...)`, true);
        return;
      }
      let graph: Graph;
      try {
        graph = workflowToGraph(doc, catalog);
      } catch (error) {
        say(`${source} cannot be drawn: ${(error as Error).message}`, true);
        return;
      }
      if (opts.keepHistory !== false && state.current.nodes.length > 0) remember();
      performance.mark("diffgraph:document");
      statusStore.clear("all");
      setBase(graph.base);
      setNodes(graph.nodes);
      setEdges(graph.edges);
      setRevision((r) => r + 1);
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
          flow.setViewport({
            x: (canvas.width - width * zoom) / 2 - left * zoom,
            y: (canvas.height - height * zoom) / 2 - top * zoom,
            zoom,
          });
        }
        requestAnimationFrame(() => flow.fitView({ padding: 0.1, maxZoom: 1 }));
      }
      say(`Opened ${source}.`);
    },
    [catalog, flow, remember, say],
  );

  const openFile = useCallback(
    async (file: File) => {
      try {
        const bytes = new Uint8Array(await file.arrayBuffer());
        if (isPng(bytes)) {
          const embedded = await readEmbeddedWorkflow(bytes);
          const doc = structuredClone(embedded.workflow);
          // the image was made with these template param values: make them the defaults
          for (const [name, value] of Object.entries(embedded.params)) {
            const declared = doc.params?.[name];
            if (declared && typeof declared === "object") declared.default = value;
          }
          loadDocument(doc, file.name);
          return;
        }
        const text = new TextDecoder().decode(bytes);
        let doc: unknown;
        try {
          // YAML is loaded on first use: most sessions never open a file
          doc = (await import("yaml")).parse(text);
        } catch (error) {
          throw new Error(`${file.name} is not valid YAML or JSON: ${(error as Error).message}`);
        }
        loadDocument(doc as WorkflowDocument, file.name);
      } catch (error) {
        fail(error);
      }
    },
    [fail, loadDocument],
  );

  const currentDocument = useCallback((): WorkflowDocument => {
    const { base, nodes, edges } = state.current;
    return graphToWorkflow({ base, nodes, edges } as Graph);
  }, []);

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
          const doc = entry.document ?? entry.workflow;
          if (doc) {
            const spec = subgraphSpec(entry.name, doc, loaded);
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
        if (opened) loadDocument(opened[0], opened[1], { keepHistory: false });
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

  useEffect(() => linkStore.setEdges(edges), [edges]);

  // -- validation: errors show on the nodes before anything runs -------------------------------
  const showIssues = useCallback((issues: Issue[]) => {
    statusStore.clear("issues");
    const byNode = new Map<string, Issue[]>();
    const general: Issue[] = [];
    const ids = new Set(state.current.nodes.map((n) => n.id));
    for (const issue of issues) {
      const id = issue.node ? canvasNodeId(issue.node) : null;
      if (id && ids.has(id)) byNode.set(id, [...(byNode.get(id) ?? []), issue]);
      else general.push(issue);
    }
    for (const [id, list] of byNode) statusStore.update(id, { issues: list });
    setWorkflowIssues(general);
  }, []);

  useEffect(() => {
    if (revision === 0 || Object.keys(catalog).length === 0) return;
    const timer = setTimeout(async () => {
      try {
        const result = await api.validateWorkflow(currentDocument());
        showIssues(result.errors);
      } catch (error) {
        fail(error);
      }
    }, 400);
    return () => clearTimeout(timer);
  }, [revision, catalog, currentDocument, showIssues, fail]);

  // -- the run loop ----------------------------------------------------------------------------
  const starting = useRef(false);
  const early = useRef<RunEvent[]>([]);
  const handleEvent = useRef<(event: RunEvent) => void>(() => {});
  handleEvent.current = (event: RunEvent) => {
    const outcome = applyRunEvent(event);
    // a cached node's inputs were not needed: what feeds it counts as cached too
    if (event.type === "node_cached" && event.node) markUpstreamCached(canvasNodeId(event.node), state.current.edges);
    if (outcome.done) {
      runRef.current = null;
      setRunId(null);
      setHistoryRevision((r) => r + 1);
      if (outcome.message) setMessage({ text: outcome.message, error: !!outcome.error });
      // the event carries names of this run's files; the record is the fallback if it did not
      if (event.type === "run_finished" && !event.outputs) {
        api.fetchRun(event.run_id).then((run) => showOutputs(run.outputs)).catch(fail);
      }
    }
  };

  useEffect(() => {
    let socket: WebSocket | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let closed = false;
    let delay = 500;
    const connect = () => {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
      socket.binaryType = "arraybuffer";
      socket.onopen = () => {
        if (delay > 500 || document.body.dataset.socket === "closed") say("Reconnected to the server.");
        delay = 500;
        document.body.dataset.socket = "open";
      };
      socket.onmessage = (message) => {
        if (typeof message.data !== "string") {
          const frame = decodePreview(message.data as ArrayBuffer);
          if (frame && frame.header.run_id === runRef.current && frame.header.node) {
            statusStore.update(canvasNodeId(frame.header.node), { preview: URL.createObjectURL(frame.image) });
          }
          return;
        }
        let event: RunEvent;
        try {
          event = JSON.parse(message.data) as RunEvent;
        } catch {
          return;
        }
        if (!event.run_id || event.run_id !== runRef.current) {
          // events of the run being submitted can beat the POST's answer: keep them for replay
          if (starting.current && early.current.length < 10_000) early.current.push(event);
          if (event.type === "run_finished" || event.type === "run_failed" || event.type === "run_cancelled") {
            setHistoryRevision((r) => r + 1);
          }
          return;
        }
        handleEvent.current(event);
      };
      socket.onclose = () => {
        if (!closed && document.body.dataset.socket === "open") {
          say("Lost the live connection to the server (run progress will not show); reconnecting…", true);
        }
        document.body.dataset.socket = "closed";
        if (!closed) retry = setTimeout(connect, (delay = Math.min(delay * 2, 8000)));
      };
    };
    connect();
    return () => {
      closed = true;
      clearTimeout(retry);
      socket?.close();
    };
  }, [fail, say]);

  const run = useCallback(async () => {
    if (runRef.current) {
      say("A run is already in progress; cancel it first.", true);
      return;
    }
    const doc = currentDocument();
    try {
      statusStore.clear("run");
      for (const node of state.current.nodes) statusStore.update(node.id, { state: "queued", error: undefined });
      starting.current = true;
      early.current = [];
      let id: string;
      try {
        id = await api.startRun(doc);
      } finally {
        starting.current = false;
      }
      runRef.current = id;
      setRunId(id);
      say(`Run ${id} queued.`);
      for (const event of early.current.splice(0)) if (event.run_id === id && runRef.current === id) handleEvent.current(event);
      if (document.body.dataset.socket === "open" || runRef.current !== id) return;
      // without the socket, the record says where the run is
      const record = await api.fetchRun(id).catch(() => null);
      if (record && runRef.current === id && record.status !== "queued" && record.status !== "running") {
        showRunRecord(record, state.current.edges);
        runRef.current = null;
        setRunId(null);
        setHistoryRevision((r) => r + 1);
        say(record.status === "succeeded" ? "Run finished." : `Run ${record.status}: ${record.error ?? ""}`, record.status !== "succeeded");
      }
    } catch (error) {
      statusStore.clear("run");
      if (error instanceof api.ApiError && error.issues.length > 0) showIssues(error.issues);
      fail(error);
    }
  }, [currentDocument, fail, say, showIssues]);

  const cancel = useCallback(async () => {
    const id = runRef.current;
    if (!id) return;
    try {
      await api.cancelRun(id);
      say(`Cancelling run ${id}…`);
    } catch (error) {
      fail(error);
    }
  }, [fail, say]);

  // -- editing ---------------------------------------------------------------------------------
  const setParam = useCallback(
    (nodeId: string, name: string, value: unknown) => {
      remember(`param:${nodeId}:${name}`);
      setNodes((nds) =>
        nds.map((n) => (n.id === nodeId ? { ...n, data: { ...n.data, params: { ...n.data.params, [name]: value } } } : n)),
      );
      setRevision((r) => r + 1);
    },
    [remember],
  );

  const renameNode = useCallback(
    (from: string, raw: string): string | null => {
      const to = raw.trim();
      if (to === from) return null;
      if (!to || /[./$\s]/.test(to)) return "an id is not empty and has no '.', '/', '$' or spaces";
      if (state.current.nodes.some((n) => n.id === to)) return `there is already a node ${to}`;
      remember();
      const renamed = (id: string) => (id === from ? to : id);
      setNodes((nds) => nds.map((n) => (n.id === from ? { ...n, id: to } : n)));
      setEdges((eds) =>
        eds.map((e) => {
          const [source, target] = [renamed(e.source), renamed(e.target)];
          return { ...e, source, target, id: edgeId(source, e.sourceHandle ?? "", target, e.targetHandle ?? "") };
        }),
      );
      // the workflow's `outputs:` name nodes too
      setBase((b) => {
        if (!b.outputs || typeof b.outputs !== "object") return b;
        const outputs = Object.fromEntries(
          Object.entries(b.outputs).map(([k, v]) => [k, typeof v === "string" && v.startsWith(`${from}.`) ? `${to}${v.slice(from.length)}` : v]),
        );
        return { ...b, outputs };
      });
      statusStore.update(from, { issues: [], state: undefined, images: [] });
      setRevision((r) => r + 1);
      return null;
    },
    [remember],
  );

  const upload = useCallback(async (file: File) => {
    const saved = await api.uploadImage(file);
    const value = saved.name;
    thumbnails.current.set(value, URL.createObjectURL(file));
    return value;
  }, []);

  const actions: EditorActions = useMemo(
    () => ({ catalog, setParam, renameNode, upload, thumbnail: (value: string) => thumbnails.current.get(value) }),
    [catalog, setParam, renameNode, upload],
  );

  const onNodesChange = useCallback(
    (changes: NodeChange<DgNode>[]) => {
      if (changes.some((c) => c.type === "remove")) {
        remember();
        setRevision((r) => r + 1);
      }
      setNodes((nds) => applyNodeChanges(changes, nds));
    },
    [remember],
  );

  const onEdgesChange = useCallback(
    (changes: EdgeChange<DgEdge>[]) => {
      if (changes.some((c) => c.type === "remove")) {
        remember();
        setRevision((r) => r + 1);
      }
      setEdges((eds) => applyEdgeChanges(changes, eds));
    },
    [remember],
  );

  const describePort = useCallback(
    (node: string, handle: string | null | undefined, kind: "source" | "target") => {
      const type = state.current.nodes.find((n) => n.id === node)?.data.type;
      return `${node}.${handle} (${portType(catalog, type, handle, kind) ?? "?"})`;
    },
    [catalog],
  );

  const whyRefused = useCallback(
    (c: Connection | DgEdge): string | null => {
      if (c.source === c.target) return "a node cannot feed itself";
      const byId = new Map(state.current.nodes.map((n) => [n.id, n]));
      const from = portType(catalog, byId.get(c.source)?.data.type, c.sourceHandle, "source");
      const to = portType(catalog, byId.get(c.target)?.data.type, c.targetHandle, "target");
      if (from && to && !typeFeeds(from, to)) return `${from} cannot feed ${to}`;
      // refuse cycles: the target must not already reach the source
      const outgoing = new Map<string, string[]>();
      for (const e of state.current.edges) outgoing.set(e.source, [...(outgoing.get(e.source) ?? []), e.target]);
      const stack = [c.target];
      const seen = new Set<string>();
      while (stack.length) {
        const id = stack.pop()!;
        if (id === c.source) return "the link would make a cycle";
        if (seen.has(id)) continue;
        seen.add(id);
        stack.push(...(outgoing.get(id) ?? []));
      }
      return null;
    },
    [catalog],
  );

  const isValidConnection: IsValidConnection<DgEdge> = useCallback((c) => whyRefused(c) === null, [whyRefused]);

  const onConnect = useCallback(
    (c: Connection) => {
      if (whyRefused(c)) return;
      remember();
      // an input takes one link: a new one replaces the old
      setEdges((eds) => [
        ...eds.filter((e) => !(e.target === c.target && e.targetHandle === c.targetHandle)),
        {
          id: edgeId(c.source, c.sourceHandle ?? "", c.target, c.targetHandle ?? ""),
          type: "typed",
          source: c.source,
          sourceHandle: c.sourceHandle,
          target: c.target,
          targetHandle: c.targetHandle,
          data: { type: portType(catalog, state.current.nodes.find((n) => n.id === c.source)?.data.type, c.sourceHandle, "source") },
        },
      ]);
      setRevision((r) => r + 1);
    },
    [catalog, remember, whyRefused],
  );

  const onConnectEnd = useCallback(
    (_event: MouseEvent | TouchEvent, connection: FinalConnectionState) => {
      if (connection.isValid || !connection.toHandle || !connection.fromHandle) return;
      const from = connection.fromHandle.type === "source" ? connection.fromHandle : connection.toHandle;
      const to = connection.fromHandle.type === "source" ? connection.toHandle : connection.fromHandle;
      const reason = whyRefused({ source: from.nodeId, sourceHandle: from.id ?? null, target: to.nodeId, targetHandle: to.id ?? null });
      if (reason) {
        say(`Link refused: ${describePort(from.nodeId, from.id, "source")} → ${describePort(to.nodeId, to.id, "target")}: ${reason}.`, true);
      }
    },
    [describePort, say, whyRefused],
  );

  const addNode = useCallback(
    (type: string, position?: { x: number; y: number }) => {
      remember();
      const taken = new Set(state.current.nodes.map((n) => n.id));
      const id = freshId(type, taken);
      const at = position ?? flow.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 3 });
      // a click in the palette never drops a node on top of another one
      const overlaps = (x: number, y: number) =>
        state.current.nodes.some((n) => Math.abs(n.position.x - x) < NODE_WIDTH + 20 && Math.abs(n.position.y - y) < 120);
      if (!position) while (overlaps(at.x, at.y)) at.x += NODE_WIDTH + 40;
      const node: DgNode = {
        id,
        type: "dg",
        position: at,
        selected: true,
        data: { type, params: {}, keyOrder: [], extra: {}, inputOrder: [], dangling: {} },
      };
      setNodes((nds) => [...nds.map((n) => ({ ...n, selected: false })), node]);
      setRevision((r) => r + 1);
    },
    [flow, remember],
  );

  const copy = useCallback(() => {
    const { base, nodes, edges } = state.current;
    const chosen = nodes.filter((n) => n.selected);
    if (chosen.length === 0) return;
    const ids = new Set(chosen.map((n) => n.id));
    clipboard.current = { base, nodes: chosen, edges: edges.filter((e) => ids.has(e.source) && ids.has(e.target)) };
    say(`Copied ${chosen.length} node${chosen.length > 1 ? "s" : ""}.`);
  }, [say]);

  const paste = useCallback(() => {
    const copied = clipboard.current;
    if (!copied) return;
    remember();
    const taken = new Set(state.current.nodes.map((n) => n.id));
    const renamed = new Map<string, string>();
    for (const node of copied.nodes) {
      const id = freshId(node.id.replace(/_\d+$/, ""), taken);
      taken.add(id);
      renamed.set(node.id, id);
    }
    const pasted: DgNode[] = copied.nodes.map((n) => ({
      ...n,
      id: renamed.get(n.id)!,
      selected: true,
      position: { x: n.position.x + 40, y: n.position.y + 40 },
      data: structuredClone(n.data),
    }));
    const links: DgEdge[] = copied.edges.map((e) => {
      const source = renamed.get(e.source)!;
      const target = renamed.get(e.target)!;
      return { ...e, id: edgeId(source, e.sourceHandle ?? "", target, e.targetHandle ?? ""), source, target, selected: false };
    });
    setNodes((nds) => [...nds.map((n) => ({ ...n, selected: false })), ...pasted]);
    setEdges((eds) => [...eds, ...links]);
    clipboard.current = { ...copied, nodes: pasted, edges: links };
    setRevision((r) => r + 1);
  }, [remember]);

  const autoLayout = useCallback(() => {
    remember();
    const placed = layoutPositions(state.current.nodes, state.current.edges, catalog);
    setNodes((nds) => nds.map((n) => ({ ...n, position: placed[n.id] ?? n.position })));
    requestAnimationFrame(() => flow.fitView({ padding: 0.1, maxZoom: 1 }));
  }, [catalog, flow, remember]);

  const setTemplateParam = useCallback(
    (name: string, patch: Partial<TemplateParam>) => {
      remember(`template:${name}`);
      setBase((b) => ({ ...b, params: { ...(b.params ?? {}), [name]: { ...(b.params?.[name] as TemplateParam), ...patch } } }));
      setRevision((r) => r + 1);
    },
    [remember],
  );

  const setWorkflowName = useCallback(
    (name: string) => {
      remember("workflow-name");
      setBase((b) => ({ ...b, name }));
    },
    [remember],
  );

  const saveYaml = useCallback(async () => {
    const { stringify } = await import("yaml");
    download(`${state.current.base.name || "workflow"}.yaml`, stringify(currentDocument()), "application/yaml");
  }, [currentDocument]);

  // -- keyboard --------------------------------------------------------------------------------
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const mod = e.ctrlKey || e.metaKey;
      if (mod && e.key === "Enter") {
        e.preventDefault();
        run();
        return;
      }
      if (isEditable(e.target) || !mod) return;
      const key = e.key.toLowerCase();
      if (key === "z" && !e.shiftKey) undo();
      else if ((key === "z" && e.shiftKey) || key === "y") redo();
      else if (key === "c") copy();
      else if (key === "v") paste();
      else if (key === "s") {
        saveYaml();
      } else return;
      e.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [copy, paste, redo, run, saveYaml, undo]);

  // -- drag and drop: palette entries and files ------------------------------------------------
  const onDrop = useCallback(
    (e: React.DragEvent) => {
      e.preventDefault();
      const type = e.dataTransfer.getData("application/diffgraph-node");
      if (type) {
        addNode(type, flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }));
        return;
      }
      const file = e.dataTransfer.files?.[0];
      if (file) openFile(file);
    },
    [addNode, flow, openFile],
  );

  const fileInput = useRef<HTMLInputElement>(null);

  return (
    <EditorContext.Provider value={actions}>
      <div className="app">
        <header className="toolbar">
          <strong className="brand">diffgraph</strong>
          <input
            className="workflow-name"
            aria-label="workflow name"
            value={String(base.name ?? "")}
            onChange={(e) => setWorkflowName(e.target.value)}
          />
          <button onClick={() => loadDocument(emptyWorkflow(), "a new workflow")}>New</button>
          <button onClick={() => fileInput.current?.click()} title="Open a YAML/JSON workflow or a PNG made by SaveImage">
            Open…
          </button>
          <input
            ref={fileInput}
            data-testid="open-file"
            type="file"
            accept=".yaml,.yml,.json,.png,image/png,application/json"
            hidden
            onChange={(e) => {
              const file = e.target.files?.[0];
              e.target.value = "";
              if (file) openFile(file);
            }}
          />
          <button onClick={saveYaml}>
            Save YAML
          </button>
          <button onClick={() => download(`${base.name || "workflow"}.json`, JSON.stringify(currentDocument(), null, 2) + "\n", "application/json")}>
            Save JSON
          </button>
          <span className="sep" />
          <button onClick={undo} title="Undo (Ctrl+Z)">Undo</button>
          <button onClick={redo} title="Redo (Ctrl+Shift+Z)">Redo</button>
          <button onClick={autoLayout}>Auto-layout</button>
          <button onClick={() => flow.fitView({ padding: 0.1, maxZoom: 1 })}>Fit view</button>
          <span className="sep" />
          <button className="run" data-testid="run" onClick={run} disabled={!!runId} title="Run (Ctrl+Enter)">
            {runId ? "Running…" : "Run"}
          </button>
          <button data-testid="cancel" onClick={cancel} disabled={!runId}>
            Cancel
          </button>
        </header>
        {message && (
          <div className={`banner ${message.error ? "error" : "info"}`} data-testid="banner" role={message.error ? "alert" : "status"}>
            <span>{message.text}</span>
            <button onClick={() => setMessage(null)} aria-label="dismiss">×</button>
          </div>
        )}
        {workflowIssues.length > 0 && (
          <div className="banner error" data-testid="workflow-issues">
            {workflowIssues.map((i, k) => (
              <div key={k}>{i.field ? `${i.field}: ` : ""}{i.message}</div>
            ))}
          </div>
        )}
        <div className="main">
          <Sidebar
            catalog={catalog}
            base={base}
            addNode={addNode}
            setTemplateParam={setTemplateParam}
            loadDocument={loadDocument}
            currentDocument={currentDocument}
            historyRevision={historyRevision}
            onRunRecord={(record) => {
              if (record.workflow) loadDocument(record.workflow, `run ${record.id}`);
              showRunRecord(record, state.current.edges);
            }}
            say={say}
            fail={fail}
          />
          <div className="canvas" onDragOver={(e) => e.preventDefault()} onDrop={onDrop}>
            <ReactFlow<DgNode, DgEdge>
              nodes={nodes}
              edges={edges}
              nodeTypes={nodeTypes}
              edgeTypes={edgeTypes}
              onNodesChange={onNodesChange}
              onEdgesChange={onEdgesChange}
              onConnect={onConnect}
              onConnectEnd={onConnectEnd}
              isValidConnection={isValidConnection}
              onNodeDragStart={() => remember()}
              deleteKeyCode={["Backspace", "Delete"]}
              multiSelectionKeyCode={["Control", "Meta", "Shift"]}
              minZoom={0.05}
              maxZoom={2}
              onlyRenderVisibleElements
              proOptions={{ hideAttribution: true }}
              defaultEdgeOptions={{ type: "typed" }}
            >
              <Background />
              <Controls />
              <MiniMap pannable zoomable nodeColor={(n) => typeColour(catalog[(n as DgNode).data.type]?.outputs[0]?.type)} />
            </ReactFlow>
          </div>
        </div>
      </div>
    </EditorContext.Provider>
  );
}

let requests: {
  catalog: Promise<[Catalog, api.TemplateEntry[] | Error]>;
  document: Promise<[WorkflowDocument, string] | null>;
} | null = null;

/** The requests the editor starts with, sent before React first renders (main.tsx calls this). */
export function prefetch() {
  requests ??= {
    catalog: Promise.all([api.fetchCatalog(), api.fetchTemplates().catch((error: Error) => error)]),
    document: fetchStartupDocument(),
  };
  // handled where they are awaited; this keeps an early failure from being reported as unhandled
  requests.catalog.catch(() => {});
  requests.document.catch(() => {});
  return requests;
}

/** `?library=NAME` or `?template=NAME` in the page's URL opens that workflow. */
async function fetchStartupDocument(): Promise<[WorkflowDocument, string] | null> {
  const query = new URLSearchParams(window.location.search);
  const fromLibrary = query.get("library");
  const fromTemplate = query.get("template");
  if (fromLibrary) return [await api.fetchSaved(fromLibrary), `library workflow ${fromLibrary}`];
  if (fromTemplate) {
    const entry = (await api.fetchTemplates()).find((t) => t.name === fromTemplate);
    if (!entry) throw new Error(`no template named ${fromTemplate}`);
    return [templateDocument(entry), `template ${fromTemplate}`];
  }
  return null;
}

export function templateDocument(entry: api.TemplateEntry): WorkflowDocument {
  const doc = entry.workflow ?? entry.document ?? (entry.nodes ? (entry as unknown as WorkflowDocument) : null);
  if (!doc) throw new Error(`template ${entry.name} came without its document`);
  return doc;
}

export function App() {
  return (
    <ReactFlowProvider>
      <Editor />
    </ReactFlowProvider>
  );
}
