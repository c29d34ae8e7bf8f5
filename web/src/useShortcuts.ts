// The editor's keyboard shortcuts (listed for the user in Toolbar's SHORTCUTS).

import { useEffect, useRef } from "react";

export interface ShortcutHandlers {
  run(): void;
  undo(): void;
  redo(): void;
  copy(): void;
  paste(): void;
  save(): void;
  mute(): void;
  bypass(): void;
  group(): void;
  toggleHelp(): void;
  escape(): void;
}

function isEditable(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  return !!el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
}

export function useShortcuts(handlers: ShortcutHandlers): void {
  const latest = useRef(handlers);
  latest.current = handlers;
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const h = latest.current;
      const mod = e.ctrlKey || e.metaKey;
      if (mod && e.key === "Enter") {
        e.preventDefault();
        h.run();
        return;
      }
      // typing in a field keeps its own keys (Ctrl+Z undoes the text, not the graph)
      if (isEditable(e.target)) return;
      if (e.key === "Escape") return h.escape();
      if (e.key === "?" && !mod) return h.toggleHelp();
      if (!mod) return;
      const key = e.key.toLowerCase();
      if (key === "z" && !e.shiftKey) h.undo();
      else if ((key === "z" && e.shiftKey) || key === "y") h.redo();
      else if (key === "c") h.copy();
      else if (key === "v") h.paste();
      else if (key === "s") h.save();
      else if (key === "m") h.mute();
      else if (key === "b") h.bypass();
      else if (key === "g") h.group();
      else return;
      e.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}
