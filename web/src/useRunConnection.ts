// The run connection of one editor: the /ws socket (reconnecting), submitting and cancelling
// runs, replaying events that beat the POST's answer, and applying events to the node states.

import { useCallback, useEffect, useRef, useState } from "react";
import * as api from "./api";
import type { DgEdge } from "./convert";
import { canvasNodeId, type EditorStores } from "./nodeStatus";
import { applyRunEvent, decodePreview, markUpstreamCached, showOutputs, showRunRecord, type RunEvent } from "./runEvents";
import type { Issue, WorkflowDocument } from "./types";

export interface RunConnectionOptions {
  stores: EditorStores;
  /** the canvas as it is now (the hook is called once; these are read when events arrive) */
  edges(): DgEdge[];
  nodeIds(): string[];
  say(text: string, error?: boolean): void;
  showIssues(issues: Issue[]): void;
  /** a run of this editor ended (status: succeeded, failed or cancelled) */
  onRunEnd?(status: string): void;
}

export interface RunConnection {
  runId: string | null;
  /** bumps whenever any run ends, so the history can refresh */
  historyRevision: number;
  run(doc: WorkflowDocument, options?: api.RunOptions): Promise<string | null>;
  cancel(): Promise<void>;
}

export function useRunConnection(options: RunConnectionOptions): RunConnection {
  const opts = useRef(options);
  opts.current = options;
  const [runId, setRunId] = useState<string | null>(null);
  const [historyRevision, setHistoryRevision] = useState(0);
  const runRef = useRef<string | null>(null);
  const starting = useRef(false);
  const early = useRef<RunEvent[]>([]);

  const finish = useCallback((status: string) => {
    runRef.current = null;
    setRunId(null);
    setHistoryRevision((r) => r + 1);
    opts.current.onRunEnd?.(status);
  }, []);

  const handleEvent = useCallback(
    (event: RunEvent) => {
      const { stores, edges, say } = opts.current;
      const outcome = applyRunEvent(stores.status, event);
      // a cached node's inputs were not needed: what feeds it counts as cached too
      if (event.type === "node_cached" && event.node) markUpstreamCached(stores.status, canvasNodeId(event.node), edges());
      if (!outcome.done) return;
      if (outcome.message) say(outcome.message, !!outcome.error);
      // the event carries names of this run's files; the record is the fallback if it did not
      if (event.type === "run_finished" && !event.outputs) {
        api.fetchRun(event.run_id).then((run) => showOutputs(stores.status, run.outputs)).catch((e) => say(api.errorText(e), true));
      }
      finish(event.type === "run_finished" ? "succeeded" : event.type === "run_failed" ? "failed" : "cancelled");
    },
    [finish],
  );

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
        if (delay > 500 || document.body.dataset.socket === "closed") opts.current.say("Reconnected to the server.");
        delay = 500;
        document.body.dataset.socket = "open";
      };
      socket.onmessage = (message) => {
        if (typeof message.data !== "string") {
          const frame = decodePreview(message.data as ArrayBuffer);
          if (frame && frame.header.run_id === runRef.current && frame.header.node) {
            opts.current.stores.status.update(canvasNodeId(frame.header.node), { preview: URL.createObjectURL(frame.image) });
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
        handleEvent(event);
      };
      socket.onclose = () => {
        if (!closed && document.body.dataset.socket === "open") {
          opts.current.say("Lost the live connection to the server (run progress will not show); reconnecting…", true);
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
  }, [handleEvent]);

  const run = useCallback(
    async (doc: WorkflowDocument, runOptions?: api.RunOptions): Promise<string | null> => {
      const { stores, say, showIssues, nodeIds, edges } = opts.current;
      if (runRef.current) {
        say("A run is already in progress; cancel it first.", true);
        return null;
      }
      try {
        stores.status.clear("run");
        for (const id of nodeIds()) stores.status.update(id, { state: "queued", error: undefined, seconds: undefined });
        starting.current = true;
        early.current = [];
        let id: string;
        try {
          id = await api.startRun(doc, undefined, runOptions);
        } finally {
          starting.current = false;
        }
        runRef.current = id;
        setRunId(id);
        say(`Run ${id} queued.`);
        for (const event of early.current.splice(0)) if (event.run_id === id && runRef.current === id) handleEvent(event);
        if (document.body.dataset.socket === "open" || runRef.current !== id) return id;
        // without the socket, the record says where the run is
        const record = await api.fetchRun(id).catch(() => null);
        if (record && runRef.current === id && record.status !== "queued" && record.status !== "running") {
          showRunRecord(stores.status, record, edges());
          say(record.status === "succeeded" ? "Run finished." : `Run ${record.status}: ${record.error ?? ""}`, record.status !== "succeeded");
          finish(record.status);
        }
        return id;
      } catch (error) {
        stores.status.clear("run");
        if (error instanceof api.ApiError && error.issues.length > 0) showIssues(error.issues);
        say(api.errorText(error), true);
        return null;
      }
    },
    [finish, handleEvent],
  );

  const cancel = useCallback(async () => {
    const id = runRef.current;
    if (!id) return;
    try {
      await api.cancelRun(id);
      opts.current.say(`Cancelling run ${id}…`);
    } catch (error) {
      opts.current.say(api.errorText(error), true);
    }
  }, []);

  return { runId, historyRevision, run, cancel };
}
