// The latest message, laid over the canvas so it never moves what the user is about to click.

import { useEffect } from "react";
import type { Issue } from "./types";

export interface Message {
  text: string;
  error: boolean;
  /** bumps per message so the same words said twice restart the timer */
  id: number;
}

const INFO_MS = 6000;

export function Notifications({ message, issues, dismiss }: { message: Message | null; issues: Issue[]; dismiss(): void }) {
  // information fades by itself; an error stays until dismissed
  useEffect(() => {
    if (!message || message.error) return;
    const timer = setTimeout(dismiss, INFO_MS);
    return () => clearTimeout(timer);
  }, [message, dismiss]);
  return (
    <div className="notifications" aria-live="polite">
      {message && (
        <div className={`banner ${message.error ? "error" : "info"}`} data-testid="banner" role={message.error ? "alert" : "status"}>
          <span>{message.text}</span>
          <button onClick={dismiss} aria-label="dismiss">
            ×
          </button>
        </div>
      )}
      {issues.length > 0 && (
        <div className="banner error" data-testid="workflow-issues">
          {issues.map((i, k) => (
            <div key={k}>
              {i.field ? `${i.field}: ` : ""}
              {i.message}
            </div>
          ))}
        </div>
      )}
    </div>
  );
}
