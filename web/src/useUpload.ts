// One picture param's upload state, shared by the node widget and the params panel: the file
// picker, the upload, its error, the thumbnail (read back from the server, so it survives a
// reload) and whether the mask painter is open.

import { useContext, useRef, useState, type ChangeEvent } from "react";
import * as api from "./api";
import { EditorContext } from "./editorContext";

/** Where a picture param's thumbnail comes from: this page's own copy of a file it just uploaded,
 * else the server's uploads folder (`GET /api/uploads/NAME`); nothing for `$refs` or no value. */
export function thumbnailSource(value: unknown, local: (name: string) => string | undefined): string | undefined {
  if (typeof value !== "string") return undefined;
  const name = value.trim();
  if (!name || name.startsWith("$") || name.startsWith("/")) return undefined;
  return local(name) ?? api.uploadUrl(name);
}

export function useUpload(value: unknown, set: (name: string) => void) {
  const actions = useContext(EditorContext);
  const input = useRef<HTMLInputElement>(null);
  const [error, setError] = useState<string | null>(null);
  const [painting, setPainting] = useState(false);
  // a thumbnail the server does not have (a path that is no upload) is not shown
  const [broken, setBroken] = useState<string | null>(null);
  const source = thumbnailSource(value, actions.thumbnail);
  const send = async (file: File) => {
    try {
      setError(null);
      set(await actions.upload(file));
    } catch (err) {
      setError(api.errorText(err));
    }
  };
  return {
    input,
    text: typeof value === "string" ? value : "",
    thumb: source && source !== broken ? source : undefined,
    error,
    painting,
    setPainting,
    send,
    choose: () => input.current?.click(),
    onFileChosen: (e: ChangeEvent<HTMLInputElement>) => {
      const file = e.target.files?.[0];
      e.target.value = "";
      if (file) void send(file);
    },
    onThumbnailError: () => setBroken(source ?? null),
  };
}
