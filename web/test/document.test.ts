// Every edit of the document is a pure function of (state, action): add, connect, param, rename,
// paste, delete, undo/redo, and which of them make one undo step.

import { describe, expect, it } from "vitest";
import { graphToWorkflow, workflowToGraph } from "../src/convert";
import { editorReducer, groupFrames, groupsOf, initialState, renameProblem, selection, type Action, type EditorState } from "../src/document";
import type { WorkflowDocument } from "../src/types";

const DOC: WorkflowDocument = {
  format: "diffgraph/v1",
  name: "t",
  params: { seed: { type: "INT", default: 1 } },
  nodes: {
    seed: { type: "Seed", params: { value: 3 }, metadata: { position: { x: 0, y: 0 } } },
    scale: { type: "Float", inputs: { value: "seed.seed" }, metadata: { position: { x: 300, y: 0 } } },
  },
  outputs: { number: "scale.number" },
};

const start = () => initialState(workflowToGraph(structuredClone(DOC)));
const run = (state: EditorState, ...actions: Action[]) => actions.reduce(editorReducer, state);
const saved = (state: EditorState) => graphToWorkflow(state.doc as never);

describe("editorReducer", () => {
  it("adds a node under a fresh id, selected alone, as one undo step", () => {
    const state = run(start(), { type: "add", nodeType: "Seed", position: { x: 10, y: 20 } });
    const added = state.doc.nodes.find((n) => n.id === "seed_2");
    expect(added?.position).toEqual({ x: 10, y: 20 });
    expect(state.doc.nodes.filter((n) => n.selected).map((n) => n.id)).toEqual(["seed_2"]);
    expect(run(state, { type: "undo" }).doc.nodes.map((n) => n.id)).toEqual(["seed", "scale"]);
  });

  it("connect replaces the link already into that input and undo restores it", () => {
    let state = run(start(), { type: "add", nodeType: "Int", position: { x: 0, y: 200 }, id: "int" });
    state = run(state, { type: "connect", link: { source: "int", sourceHandle: "number", target: "scale", targetHandle: "value" }, linkType: "INT" });
    expect(state.doc.edges.map((e) => e.id)).toEqual(["int.number->scale.value"]);
    expect(saved(state).nodes!.scale.inputs).toEqual({ value: "int.number" });
    expect(run(state, { type: "undo" }).doc.edges.map((e) => e.id)).toEqual(["seed.seed->scale.value"]);
  });

  it("typing into one param is one undo step; another field or a pause starts a new one", () => {
    const at = 1000;
    let state = run(
      start(),
      { type: "setParam", node: "seed", name: "value", value: 1, at },
      { type: "setParam", node: "seed", name: "value", value: 12, at: at + 200 },
      { type: "setParam", node: "seed", name: "value", value: 123, at: at + 400 },
    );
    expect(state.past).toHaveLength(1);
    expect(state.doc.nodes[0].data.params.value).toBe(123);
    state = run(state, { type: "setParam", node: "seed", name: "value", value: 5, at: at + 5000 });
    expect(state.past).toHaveLength(2);
    state = run(state, { type: "undo" });
    expect(state.doc.nodes[0].data.params.value).toBe(123);
    state = run(state, { type: "undo" });
    expect(state.doc.nodes[0].data.params.value).toBe(3);
    state = run(state, { type: "redo" }, { type: "redo" });
    expect(state.doc.nodes[0].data.params.value).toBe(5);
  });

  it("renaming moves links and the workflow's outputs with the node; a bad id is refused in words", () => {
    const state = run(start(), { type: "rename", from: "scale", to: "gain" });
    const doc = saved(state);
    expect(Object.keys(doc.nodes!)).toEqual(["seed", "gain"]);
    expect(doc.nodes!.gain.inputs).toEqual({ value: "seed.seed" });
    expect(doc.outputs).toEqual({ number: "gain.number" });
    expect(renameProblem(state.doc, "gain", "a.b")).toMatch(/'\.'/);
    expect(renameProblem(state.doc, "gain", "seed")).toBe("there is already a node seed");
    expect(run(state, { type: "rename", from: "gain", to: "seed" })).toBe(state);
  });

  it("paste gives fresh ids, keeps the links between the pasted nodes, selects only them", () => {
    let state = run(start(), { type: "nodesChange", changes: [{ type: "select", id: "seed", selected: true }, { type: "select", id: "scale", selected: true }] });
    const copied = selection(state.doc);
    expect(copied.edges).toHaveLength(1);
    state = run(state, { type: "paste", ...copied });
    expect(state.doc.nodes.map((n) => n.id)).toEqual(["seed", "scale", "seed_2", "scale_2"]);
    expect(state.doc.nodes.filter((n) => n.selected).map((n) => n.id)).toEqual(["seed_2", "scale_2"]);
    expect(state.doc.edges.map((e) => e.id)).toContain("seed_2.seed->scale_2.value");
    expect(state.doc.nodes[2].position).toEqual({ x: 40, y: 40 });
    // one undo removes the whole paste
    expect(run(state, { type: "undo" }).doc.nodes.map((n) => n.id)).toEqual(["seed", "scale"]);
  });

  it("deleting a node takes its links with it, in one undo step", () => {
    let state = run(start(), { type: "nodesChange", changes: [{ type: "remove", id: "seed" }] });
    expect(state.doc.nodes.map((n) => n.id)).toEqual(["scale"]);
    expect(state.doc.edges).toEqual([]);
    state = run(state, { type: "undo" });
    expect(state.doc.nodes.map((n) => n.id)).toEqual(["seed", "scale"]);
    expect(state.doc.edges).toHaveLength(1);
  });

  it("selection and drag frames are not edits; the end of a drag is saved but does not revalidate", () => {
    const first = start();
    let state = run(first, { type: "nodesChange", changes: [{ type: "select", id: "seed", selected: true }] });
    expect(state.past).toHaveLength(0);
    state = run(
      state,
      { type: "checkpoint" },
      { type: "nodesChange", changes: [{ type: "position", id: "seed", position: { x: 5, y: 5 }, dragging: true }] },
    );
    expect(state.saved).toBe(first.saved);
    state = run(state, { type: "nodesChange", changes: [{ type: "position", id: "seed", position: { x: 9, y: 9 }, dragging: false }] });
    expect(state.saved).toBe(first.saved + 1);
    expect(state.revision).toBe(first.revision);
    expect(run(state, { type: "undo" }).doc.nodes[0].position).toEqual({ x: 0, y: 0 });
  });

  it("template params, the workflow name and layout are undoable edits", () => {
    let state = run(start(), { type: "setTemplateParam", name: "seed", patch: { default: 7 }, at: 0 });
    expect(state.doc.base.params!.seed).toEqual({ type: "INT", default: 7 });
    state = run(state, { type: "setName", name: "renamed", at: 0 }, { type: "layout", positions: { seed: { x: 1, y: 2 } } });
    expect(state.doc.base.name).toBe("renamed");
    expect(state.doc.nodes[0].position).toEqual({ x: 1, y: 2 });
    state = run(state, { type: "undo" }, { type: "undo" }, { type: "undo" });
    expect(saved(state)).toEqual(saved(start()));
  });

  it("a flag in a node's metadata (collapse) survives saving and is undoable", () => {
    const state = run(start(), { type: "setNodeFlag", ids: ["seed"], flag: "collapsed", value: true });
    expect(saved(state).nodes!.seed.metadata).toEqual({ position: { x: 0, y: 0 }, collapsed: true });
    expect(saved(run(state, { type: "undo" })).nodes!.seed.metadata).toEqual({ position: { x: 0, y: 0 } });
  });

  it("loading keeps the previous document for undo unless told not to", () => {
    const other = workflowToGraph({ format: "diffgraph/v1", nodes: { n: { type: "Int" } } });
    const loaded = run(start(), { type: "load", graph: other });
    expect(loaded.doc.nodes.map((n) => n.id)).toEqual(["n"]);
    expect(run(loaded, { type: "undo" }).doc.nodes.map((n) => n.id)).toEqual(["seed", "scale"]);
    expect(run(start(), { type: "load", graph: other, keepHistory: false }).past).toEqual([]);
  });

  it("undo with nothing to undo changes nothing", () => {
    const state = start();
    expect(run(state, { type: "undo" })).toBe(state);
    expect(run(state, { type: "redo" })).toBe(state);
  });
});

describe("groups", () => {
  const sizes = { seed: { width: 200, height: 100 }, scale: { width: 200, height: 100 } };
  it("a group frames the chosen nodes, is kept in the document's metadata and undoes", () => {
    const state = run(start(), { type: "group", ids: ["seed", "scale"], title: "inputs", sizes });
    const doc = saved(state);
    expect((doc.metadata as { groups: unknown[] }).groups).toEqual([{ id: "g1", title: "inputs", x: -30, y: -50, width: 560, height: 180 }]);
    expect(saved(run(state, { type: "undo" })).metadata).toBeUndefined();
  });

  it("moving a group moves the nodes inside it, not the others", () => {
    let state = run(start(), { type: "add", nodeType: "Int", position: { x: 2000, y: 0 }, id: "far" });
    state = run(state, { type: "group", ids: ["seed"], title: "one", sizes }, { type: "checkpoint" });
    state = run(state, { type: "groupChange", changes: [{ type: "position", id: "group/g1", position: { x: 70, y: 50 }, dragging: false }] });
    const at = Object.fromEntries(state.doc.nodes.map((n) => [n.id, n.position]));
    expect(at.seed).toEqual({ x: 100, y: 100 });
    expect(at.scale).toEqual({ x: 300, y: 0 });
    expect(at.far).toEqual({ x: 2000, y: 0 });
    expect(run(state, { type: "undo" }).doc.nodes[0].position).toEqual({ x: 0, y: 0 });
  });

  it("removing a group keeps its nodes; renaming changes its title", () => {
    let state = run(start(), { type: "group", ids: ["seed"], title: "one", sizes });
    state = run(state, { type: "renameGroup", id: "g1", title: "seeds" });
    expect(saved(state).metadata).toMatchObject({ groups: [{ title: "seeds" }] });
    state = run(state, { type: "groupChange", changes: [{ type: "remove", id: "group/g1" }] });
    expect(saved(state).metadata).toBeUndefined();
    expect(state.doc.nodes).toHaveLength(2);
  });

  it("a group is selectable, and the Delete key's changes remove the selected group, not its nodes", () => {
    let state = run(start(), { type: "group", ids: ["seed", "scale"], title: "one", sizes });
    expect(groupFrames(state.doc.base, state.selectedGroups)).toMatchObject([{ id: "group/g1", selected: false, selectable: true, deletable: true }]);
    // a click on the frame: React Flow's select change; a selection is not an undo step nor a save
    const before = state;
    state = run(state, { type: "groupChange", changes: [{ type: "select", id: "group/g1", selected: true }] });
    expect(state.selectedGroups).toEqual(["g1"]);
    expect(groupFrames(state.doc.base, state.selectedGroups)[0].selected).toBe(true);
    expect([state.past.length, state.saved, state.doc]).toEqual([before.past.length, before.saved, before.doc]);
    // Delete: React Flow sends a remove change for each selected node, the frame among them
    state = run(state, { type: "groupChange", changes: [{ type: "remove", id: "group/g1" }] });
    expect(groupsOf(state.doc.base)).toEqual([]);
    expect(state.selectedGroups).toEqual([]);
    expect(state.doc.nodes.map((n) => n.id)).toEqual(["seed", "scale"]);
    const undone = run(state, { type: "undo" });
    expect(groupsOf(undone.doc.base).map((g) => g.title)).toEqual(["one"]);
  });

  it("a click elsewhere deselects the group; loading another document forgets its selection", () => {
    let state = run(start(), { type: "group", ids: ["seed"], title: "one", sizes });
    state = run(state, { type: "groupChange", changes: [{ type: "select", id: "group/g1", selected: true }] });
    expect(run(state, { type: "groupChange", changes: [{ type: "select", id: "group/g1", selected: false }] }).selectedGroups).toEqual([]);
    expect(run(state, { type: "load", graph: workflowToGraph({ format: "diffgraph/v1", nodes: {} }) }).selectedGroups).toEqual([]);
  });
});
