// The toolbar: file commands, undo/redo, layout, and the run controls.

import { useRef } from "react";

export type SeedControl = "fixed" | "increment" | "randomize";

export interface ToolbarProps {
  name: string;
  setName(name: string): void;
  newWorkflow(): void;
  openFile(file: File): void;
  saveYaml(): void;
  saveJson(): void;
  undo(): void;
  redo(): void;
  autoLayout(): void;
  fitView(): void;
  running: boolean;
  run(): void;
  cancel(): void;
  queueCount: number;
  setQueueCount(n: number): void;
  seedControl: SeedControl;
  setSeedControl(control: SeedControl): void;
  compile: boolean;
  setCompile(on: boolean): void;
  showHelp(): void;
}

export function Toolbar(p: ToolbarProps) {
  const fileInput = useRef<HTMLInputElement>(null);
  return (
    <header className="toolbar">
      <strong className="brand">diffgraph</strong>
      <input className="workflow-name" aria-label="workflow name" value={p.name} onChange={(e) => p.setName(e.target.value)} />
      <button onClick={p.newWorkflow}>New</button>
      <button onClick={() => fileInput.current?.click()} title="Open a YAML/JSON workflow or a PNG made by SaveImage">
        Open…
      </button>
      <input
        ref={fileInput}
        data-testid="open-file"
        type="file"
        accept=".yaml,.yml,.json,.png,image/*,application/json"
        hidden
        onChange={(e) => {
          const file = e.target.files?.[0];
          e.target.value = "";
          if (file) p.openFile(file);
        }}
      />
      <button onClick={p.saveYaml}>Save YAML</button>
      <button onClick={p.saveJson}>Save JSON</button>
      <span className="sep" />
      <button onClick={p.undo} title="Undo (Ctrl+Z)">Undo</button>
      <button onClick={p.redo} title="Redo (Ctrl+Shift+Z)">Redo</button>
      <button onClick={p.autoLayout}>Auto-layout</button>
      <button onClick={p.fitView}>Fit view</button>
      <span className="sep" />
      <button className="run" data-testid="run" onClick={p.run} disabled={p.running} title="Run (Ctrl+Enter)">
        {p.running ? "Running…" : "Run"}
      </button>
      <label className="queue" title="How many runs one press of Run queues, one after the other">
        ×
        <input
          type="number"
          data-testid="queue-count"
          aria-label="runs per press"
          min={1}
          max={100}
          value={p.queueCount}
          onChange={(e) => p.setQueueCount(Math.max(1, Math.min(100, Math.trunc(Number(e.target.value)) || 1)))}
        />
      </label>
      <select
        data-testid="seed-control"
        aria-label="seed after each run"
        title="What happens to seeds after each run"
        value={p.seedControl}
        onChange={(e) => p.setSeedControl(e.target.value as SeedControl)}
      >
        <option value="fixed">seed: fixed</option>
        <option value="increment">seed: increment</option>
        <option value="randomize">seed: randomize</option>
      </select>
      <label
        className="compile-toggle"
        title="torch.compile the denoiser for these runs (like `diffgraph run --compile`): the first run of each image size pays the compile time, later ones run faster. Unchecked, runs take the server's own setting."
      >
        <input type="checkbox" data-testid="compile-toggle" checked={p.compile} onChange={(e) => p.setCompile(e.target.checked)} />
        compile
      </label>
      <button data-testid="cancel" onClick={p.cancel} disabled={!p.running}>
        Cancel
      </button>
      <span className="grow" />
      <button className="icon" data-testid="help" onClick={p.showHelp} title="Keyboard shortcuts (?)">
        ?
      </button>
    </header>
  );
}

export const SHORTCUTS: [string, string][] = [
  ["Ctrl+Enter", "run the workflow"],
  ["Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y)", "undo / redo"],
  ["Ctrl+C / Ctrl+V", "copy / paste the selected nodes"],
  ["Ctrl+S", "download the workflow as YAML"],
  ["Delete / Backspace", "delete the selection"],
  ["Ctrl+G", "group the selected nodes in a titled frame (drag its title to move them all)"],
  ["Ctrl+M", "mute the selected nodes (they and what depends on them do not run)"],
  ["Ctrl+B", "bypass the selected nodes (their input passes straight through)"],
  ["Double-click the canvas", "search nodes to add there"],
  ["Drop a link on the canvas", "search the nodes it can connect to"],
  ["Double-click a node's id", "rename the node"],
  ["Ctrl/Shift+click", "select several nodes"],
  ["?", "this list"],
  ["Escape", "close a panel or the search"],
];

export function ShortcutsHelp({ close }: { close(): void }) {
  return (
    <div className="modal" role="dialog" aria-label="keyboard shortcuts" data-testid="shortcuts" onClick={close}>
      <div className="modal-body" onClick={(e) => e.stopPropagation()}>
        <h3>Keyboard shortcuts</h3>
        <table>
          <tbody>
            {SHORTCUTS.map(([keys, what]) => (
              <tr key={keys}>
                <td>
                  <kbd>{keys}</kbd>
                </td>
                <td>{what}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <button onClick={close}>Close</button>
      </div>
    </div>
  );
}
