// The editor: one document reducer and the hooks around it (catalog, startup, validation, runs,
// editing, links, files, clipboard, shortcuts), composed into the views around the canvas.

import { ReactFlowProvider, useReactFlow } from "@xyflow/react";
import { useCallback, useEffect, useMemo, useState } from "react";
import { Canvas } from "./Canvas";
import { emptyWorkflow, type DgEdge, type DgNode } from "./convert";
import { EditorContext } from "./editorContext";
import { layoutPositions } from "./layout";
import { createModelLists, ModelListsContext } from "./models";
import { NodeSearch } from "./NodeSearch";
import { createStores, StoresContext } from "./nodeStatus";
import { Notifications } from "./Notifications";
import { showRunRecord } from "./runEvents";
import { Sidebar } from "./Sidebar";
import { templateParamHints } from "./templateParams";
import { ShortcutsHelp, Toolbar } from "./Toolbar";
import type { TemplateParam } from "./types";
import { useCatalog } from "./useCatalog";
import { useClipboard } from "./useClipboard";
import { FIT_VIEW, useDocumentLoader } from "./useDocumentLoader";
import { useEditorActions } from "./useEditorActions";
import { useEditorDocument } from "./useEditorDocument";
import { useFileDrop } from "./useFileDrop";
import { useLinking } from "./useLinking";
import { useMessages } from "./useMessages";
import { usePlacement } from "./usePlacement";
import { useRunQueue } from "./useRunQueue";
import { useSaveFiles } from "./useSaveFiles";
import { useShortcuts } from "./useShortcuts";
import { useStartup } from "./useStartup";
import { useValidation } from "./useValidation";
import { useWorkingGraph } from "./useWorkingGraph";

function Editor() {
  const flow = useReactFlow<DgNode, DgEdge>();
  const stores = useMemo(createStores, []);
  const modelLists = useMemo(() => createModelLists(), []);
  const { state, dispatch, doc, currentDocument } = useEditorDocument();
  const { base, nodes, edges } = state.doc;
  const { message, say, fail, dismiss } = useMessages();
  const { catalog, catalogLoaded, colours } = useCatalog(fail);
  const [help, setHelp] = useState(false);

  const loadDocument = useDocumentLoader(catalog, stores, dispatch, say);
  const ready = useStartup(catalogLoaded, loadDocument, fail);
  // the working graph is kept in this browser, so a reload (or a crash) loses nothing
  useWorkingGraph(ready, state.saved, state.saved !== state.cleanAt, currentDocument);
  useEffect(() => stores.links.setEdges(edges), [edges, stores]);

  const { workflowIssues, showIssues } = useValidation({ stores, doc, currentDocument, revision: state.revision, catalog, fail });
  const runs = useRunQueue({ stores, doc, currentDocument, catalog, dispatch, say, showIssues });
  const { actions, toggleSelected, groupSelected } = useEditorActions({ catalog, colours, doc, dispatch, stores });
  const addNode = usePlacement(doc, dispatch);
  const linking = useLinking({ catalog, doc, dispatch, addNode, say });
  const { openFile, onDrop } = useFileDrop({ addNode, upload: actions.upload, loadDocument, say, fail });
  const { copy, paste } = useClipboard(doc, dispatch, say);
  const { saveYaml, saveJson } = useSaveFiles(doc, currentDocument, dispatch);
  const hints = useMemo(() => templateParamHints({ nodes, edges }, catalog), [nodes, edges, catalog]);

  const undo = useCallback(() => dispatch({ type: "undo" }), [dispatch]);
  const redo = useCallback(() => dispatch({ type: "redo" }), [dispatch]);
  const fitView = useCallback(() => flow.fitView(FIT_VIEW), [flow]);
  const autoLayout = useCallback(() => {
    dispatch({ type: "layout", positions: layoutPositions(doc().nodes, doc().edges, catalog) });
    requestAnimationFrame(fitView);
  }, [catalog, dispatch, doc, fitView]);
  const setTemplateParam = useCallback((name: string, patch: Partial<TemplateParam>) => dispatch({ type: "setTemplateParam", name, patch, at: Date.now() }), [dispatch]);

  useShortcuts({
    run: runs.run,
    undo,
    redo,
    copy,
    paste,
    save: saveYaml,
    mute: () => toggleSelected("muted"),
    bypass: () => toggleSelected("bypassed"),
    group: groupSelected,
    toggleHelp: () => setHelp((h) => !h),
    escape: () => {
      setHelp(false);
      linking.closeSearch();
    },
  });

  return (
    <StoresContext.Provider value={stores}>
      <EditorContext.Provider value={actions}>
        <ModelListsContext.Provider value={modelLists}>
          <div className="app">
            <Toolbar
              name={String(base.name ?? "")}
              setName={(name) => dispatch({ type: "setName", name, at: Date.now() })}
              newWorkflow={() => loadDocument(emptyWorkflow(), "a new workflow")}
              openFile={(file) => openFile(file)}
              saveYaml={saveYaml}
              saveJson={saveJson}
              undo={undo}
              redo={redo}
              autoLayout={autoLayout}
              fitView={fitView}
              running={runs.running}
              run={runs.run}
              cancel={runs.cancel}
              queueCount={runs.queueCount}
              setQueueCount={runs.setQueueCount}
              seedControl={runs.seedControl}
              setSeedControl={runs.setSeedControl}
              compile={runs.compile}
              setCompile={runs.setCompile}
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
                historyRevision={runs.historyRevision}
                onRunRecord={(record) => {
                  if (record.workflow) loadDocument(record.workflow, `run ${record.id}`);
                  showRunRecord(stores.status, record, doc().edges);
                }}
                onSavedToLibrary={() => dispatch({ type: "markClean" })}
                say={say}
                fail={fail}
              />
              <Canvas state={state} dispatch={dispatch} linking={linking} onDrop={onDrop}>
                <Notifications message={message} issues={workflowIssues} dismiss={dismiss} />
                {linking.search && <NodeSearch catalog={catalog} request={linking.search} choose={linking.chooseFromSearch} close={linking.closeSearch} />}
              </Canvas>
            </div>
            {help && <ShortcutsHelp close={() => setHelp(false)} />}
          </div>
        </ModelListsContext.Provider>
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
