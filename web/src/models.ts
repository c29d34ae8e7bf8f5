// Which models a model param offers: the kind its catalog widget hint asks for ("model:lora"), and
// one list per kind fetched from the server once per editor (GET /api/models?kind=).

import { createContext, useContext, useEffect, useState } from "react";
import * as api from "./api";

/** The model kind a widget hint asks for: "" for any model ("model"), null when it is no model widget. */
export function modelKind(widget: string | null | undefined): string | null {
  if (widget === "model") return "";
  return widget?.startsWith("model:") ? widget.slice("model:".length) : null;
}

/** One request per kind, shared by every model input of this editor. */
export function createModelLists(fetch: (kind: string) => Promise<string[]> = api.fetchModels): (kind: string) => Promise<string[]> {
  const lists = new Map<string, Promise<string[]>>();
  return (kind) => {
    let list = lists.get(kind);
    if (!list) {
      list = fetch(kind);
      lists.set(kind, list);
    }
    return list;
  };
}

export const ModelListsContext = createContext<(kind: string) => Promise<string[]>>(async () => []);

/** The names of the models of `kind` the server knows (empty until they arrive). */
export function useModels(kind: string): string[] {
  const lists = useContext(ModelListsContext);
  const [models, setModels] = useState<string[]>([]);
  useEffect(() => {
    let current = true;
    lists(kind).then((names) => current && setModels(names));
    return () => {
      current = false;
    };
  }, [kind, lists]);
  return models;
}
