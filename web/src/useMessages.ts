// The one message banner of the editor: `say` a sentence, `fail` with an error's words.

import { useCallback, useState } from "react";
import * as api from "./api";
import type { Message } from "./Notifications";

export function useMessages() {
  const [message, setMessage] = useState<Message | null>(null);
  const say = useCallback((text: string, error = false) => setMessage((m) => ({ text, error, id: (m?.id ?? 0) + 1 })), []);
  const fail = useCallback((error: unknown) => say(api.errorText(error), true), [say]);
  const dismiss = useCallback(() => setMessage(null), []);
  return { message, say, fail, dismiss };
}
