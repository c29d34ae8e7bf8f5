// What every node, frame and panel may ask of its editor (per editor instance, through a context).

import { createContext } from "react";
import { UNKNOWN_COLOUR } from "./graphRules";
import type { Catalog } from "./types";

export interface EditorActions {
  catalog: Catalog;
  /** each type's colour, from the catalog */
  colours: Map<string, string>;
  setParam(nodeId: string, name: string, value: unknown): void;
  /** renames a node (links and workflow outputs follow); returns why not, or null */
  renameNode(from: string, to: string): string | null;
  toggleFlag(nodeId: string, flag: "collapsed" | "muted" | "bypassed"): void;
  renameGroup(groupId: string, title: string): void;
  removeGroup(groupId: string): void;
  upload(file: File): Promise<string>;
  thumbnail(value: string): string | undefined;
}

export const EditorContext = createContext<EditorActions>({
  catalog: {},
  colours: new Map(),
  setParam: () => {},
  renameNode: () => null,
  toggleFlag: () => {},
  renameGroup: () => {},
  removeGroup: () => {},
  upload: async () => "",
  thumbnail: () => undefined,
});

export function colourOf(colours: Map<string, string>, type: string | undefined): string {
  return (type && colours.get(type)) || UNKNOWN_COLOUR;
}
