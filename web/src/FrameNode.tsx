// A group on the canvas: a titled frame behind its nodes. Dragging it moves them (the reducer's
// `groupChange`); its bottom-right corner resizes it; double-click the title to rename it; a click
// on the title selects it (Delete removes it, its nodes stay).

import { NodeResizeControl, type NodeProps } from "@xyflow/react";
import { memo, useContext, useState } from "react";
import type { GroupFrame } from "./document";
import { EditorContext } from "./editorContext";

function FrameView({ data }: NodeProps<GroupFrame>) {
  const actions = useContext(EditorContext);
  const [editing, setEditing] = useState(false);
  return (
    <div className="frame" data-testid={`group-${data.groupId}`}>
      <div className="frame-title" onDoubleClick={() => setEditing(true)} title="drag to move the group and its nodes; double-click to rename">
        {editing ? (
          <input
            className="nodrag"
            aria-label="group title"
            autoFocus
            defaultValue={data.title}
            onBlur={(e) => {
              actions.renameGroup(data.groupId, e.currentTarget.value);
              setEditing(false);
            }}
            onKeyDown={(e) => {
              if (e.key === "Enter") e.currentTarget.blur();
              if (e.key === "Escape") setEditing(false);
            }}
          />
        ) : (
          <span>{data.title}</span>
        )}
        <button className="nodrag icon" aria-label={`remove group ${data.title}`} title="Remove the group (its nodes stay)" onClick={() => actions.removeGroup(data.groupId)}>
          ×
        </button>
      </div>
      <NodeResizeControl position="bottom-right" minWidth={120} minHeight={80} className="frame-resize" />
    </div>
  );
}

export const FrameNode = memo(FrameView);
