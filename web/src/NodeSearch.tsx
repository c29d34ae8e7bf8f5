// Search box for adding a node where the user double-clicked, or at the end of a dropped link
// (then only the node types that can take that link are offered).

import { useMemo, useState } from "react";
import type { Catalog } from "./types";

export interface SearchRequest {
  /** where on the screen the box opens */
  screen: { x: number; y: number };
  /** node types on offer, with the port the dropped link wires into (all types when absent) */
  offers?: { nodeType: string; handle: string }[];
}

export function NodeSearch({ catalog, request, choose, close }: {
  catalog: Catalog;
  request: SearchRequest;
  choose(nodeType: string, handle?: string): void;
  close(): void;
}) {
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  const matches = useMemo(() => {
    const q = query.trim().toLowerCase();
    const offers = request.offers ?? Object.keys(catalog).map((nodeType) => ({ nodeType, handle: "" }));
    return offers
      .filter(({ nodeType }) => {
        const spec = catalog[nodeType];
        return !q || `${nodeType} ${spec?.category ?? ""} ${spec?.doc ?? ""}`.toLowerCase().includes(q);
      })
      .sort((a, b) => Number(!a.nodeType.toLowerCase().startsWith(q)) - Number(!b.nodeType.toLowerCase().startsWith(q)) || a.nodeType.localeCompare(b.nodeType))
      .slice(0, 30);
  }, [catalog, query, request]);
  return (
    <div className="node-search nowheel" style={{ left: request.screen.x, top: request.screen.y }} data-testid="node-search">
      <input
        autoFocus
        aria-label="search a node to add"
        placeholder={request.offers ? "Nodes that take this link…" : "Add a node…"}
        value={query}
        onChange={(e) => {
          setQuery(e.target.value);
          setActive(0);
        }}
        onKeyDown={(e) => {
          if (e.key === "Escape") close();
          else if (e.key === "ArrowDown") setActive((a) => Math.min(a + 1, matches.length - 1));
          else if (e.key === "ArrowUp") setActive((a) => Math.max(a - 1, 0));
          else if (e.key === "Enter" && matches[active]) choose(matches[active].nodeType, matches[active].handle || undefined);
          else return;
          e.preventDefault();
        }}
        onBlur={() => setTimeout(close, 150)}
      />
      <ul>
        {matches.length === 0 && <li className="muted">No node matches.</li>}
        {matches.map((m, i) => (
          <li key={m.nodeType}>
            <button
              className={i === active ? "active" : ""}
              data-testid={`search-${m.nodeType}`}
              onMouseDown={(e) => e.preventDefault()}
              onClick={() => choose(m.nodeType, m.handle || undefined)}
            >
              {m.nodeType}
              {m.handle && <small> → {m.handle}</small>}
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}
