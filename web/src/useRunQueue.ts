// Running the graph: the run connection, "queue x N" (the next run starts when one succeeds) and
// the seed control (fixed, increment, randomize), applied to the document after each run.

import { useCallback, useRef, useState, type Dispatch } from "react";
import { seedTargets, type Action, type Doc } from "./document";
import type { EditorStores } from "./nodeStatus";
import { runnableDocument } from "./runnable";
import type { SeedControl } from "./Toolbar";
import type { Catalog, Issue, WorkflowDocument } from "./types";
import { useRunConnection } from "./useRunConnection";

export function useRunQueue(options: {
  stores: EditorStores;
  doc(): Doc;
  currentDocument(): WorkflowDocument;
  catalog: Catalog;
  dispatch: Dispatch<Action>;
  say(text: string, error?: boolean): void;
  showIssues(issues: Issue[]): void;
}) {
  const { stores, doc, currentDocument, dispatch, say, showIssues } = options;
  const [queueCount, setQueueCount] = useState(1);
  const [seedControl, setSeedControl] = useState<SeedControl>("fixed");
  // unchecked, a run says nothing and takes the server's --compile flag; checked, it asks for compile
  const [compile, setCompile] = useState(false);
  /** runs still to start after the current one */
  const queued = useRef(0);
  const runAgain = useRef<() => void>(() => {});
  // read when a run ends, not when the connection was made
  const latest = useRef({ seedControl, catalog: options.catalog });
  latest.current = { seedControl, catalog: options.catalog };

  const connection = useRunConnection({
    stores,
    edges: () => doc().edges,
    nodeIds: () => doc().nodes.map((n) => n.id),
    say,
    showIssues,
    onRunEnd: (status) => {
      if (status === "succeeded") {
        const { seedControl: control, catalog } = latest.current;
        dispatch({ type: "advanceSeeds", control, targets: seedTargets(doc(), catalog), random: Math.floor(Math.random() * 2 ** 32) });
      }
      if (status === "succeeded" && queued.current > 0) setTimeout(() => runAgain.current(), 0);
      else queued.current = 0;
    },
  });

  const run = useCallback(async () => {
    const runOptions = compile ? { compile: true } : undefined;
    if (connection.runId) {
      say("A run is already in progress; cancel it first.", true);
      return;
    }
    queued.current = queueCount - 1;
    const runnable = () => {
      const { document: sent, skipped } = runnableDocument(currentDocument(), latest.current.catalog);
      if (skipped.length > 0) console.info("left out of the run:", skipped);
      return sent;
    };
    runAgain.current = () => {
      queued.current -= 1;
      // the seed control has been applied to the document by now (one render later)
      requestAnimationFrame(() => connection.run(runnable(), runOptions));
    };
    await connection.run(runnable(), runOptions);
  }, [compile, connection, currentDocument, queueCount, say]);

  const cancel = useCallback(() => {
    queued.current = 0;
    connection.cancel();
  }, [connection]);

  return { running: !!connection.runId, historyRevision: connection.historyRevision, run, cancel, queueCount, setQueueCount, seedControl, setSeedControl, compile, setCompile };
}
