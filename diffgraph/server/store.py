"""The server's SQLite file: the run queue and history, and the saved-workflow library.

One connection shared by the server's store thread (where the request handlers' calls run, off
the event loop) and the worker thread, guarded by a lock. Every statement is short, but a call can
wait for the lock or for the disk (a commit that runs a WAL checkpoint), which the event loop must
never do: app.in_store runs the handlers' calls on that thread. WAL mode keeps readers and the writer apart on disk.
A run's row is its whole story: it is inserted `queued`, the worker claims it (`running`) and
writes the result (`succeeded`, `failed`, `cancelled`) in one statement.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
SERVER_STOPPED = "server stopped"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,
    name        TEXT,
    workflow    TEXT NOT NULL,
    params      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    outputs     TEXT NOT NULL DEFAULT '{}',
    output_values TEXT NOT NULL DEFAULT '{}',
    executed    TEXT NOT NULL DEFAULT '[]',
    cached      TEXT NOT NULL DEFAULT '[]',
    seconds     TEXT NOT NULL DEFAULT '{}',
    error       TEXT,
    failed_node TEXT,
    subgraphs   TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, seq);
CREATE TABLE IF NOT EXISTS workflows (
    name       TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""

_SUMMARY_COLUMNS = ("seq, id, status, name, params, created_at, started_at, finished_at, outputs, executed, "
                    "cached, seconds, error, failed_node, sweep, options")
_ALL_COLUMNS = _SUMMARY_COLUMNS + ", workflow, output_values"


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


SQLITE_HEADER = b"SQLite format 3\x00"


class DamagedDatabase(Exception):
    """The database file exists but is not a sound SQLite database; the message is one line for the user."""


def check_database(path: Path) -> None:
    """Refuse a damaged database before anything writes to it; a missing file is a fresh start.

    Only a missing file means "new": SQLite writes its 100-byte header when it creates a database
    (and WAL mode writes the first page at once), so an existing file that is empty, short, has
    another header or fails `PRAGMA quick_check` was a database that got damaged. It is left
    exactly as it is: the history and library in it may still be recoverable."""
    if not path.exists() and not path.is_symlink():
        return
    what = f"; it was left as it is. Move it aside (mv {path} {path}.damaged) to start with an empty history and " \
           f"library, or restore it from a backup (sqlite3 {path} .recover can often save its rows)"
    if not path.is_file():
        raise DamagedDatabase(f"the database {path} is not a regular file{what}")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise DamagedDatabase(f"the database {path} cannot be read ({exc.strerror}){what}") from None
    if not header:
        raise DamagedDatabase(f"the database {path} is damaged: it is empty (0 bytes){what}")
    if header != SQLITE_HEADER:
        raise DamagedDatabase(f"the database {path} is damaged: it does not start with SQLite's header{what}")
    try:
        db = sqlite3.connect(path)  # reads only (a WAL left by a crash is replayed, as any open would)
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise DamagedDatabase(f"the database {path} is damaged: {exc}{what}") from None
    if problems != ["ok"]:
        raise DamagedDatabase(f"the database {path} is damaged: {'; '.join(problems)}{what}")
def read_saved_workflow(path: str | Path, name: str) -> dict[str, Any] | None:
    """A saved workflow from the library file at `path`, read-only (the CLI's `diffgraph run NAME`);
    None when the file or the name is not there. Never creates or changes the file."""
    if not Path(path).is_file():
        return None
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute("SELECT document FROM workflows WHERE name = ?", (name,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return None if row is None else json.loads(row[0])


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_database(self.path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._open()
        except sqlite3.DatabaseError as exc:  # damage quick_check did not see (a wrong schema, say)
            raise DamagedDatabase(f"the database {self.path} cannot be used: {exc}; it was left as it is. "
                                  "Move it aside to start with an empty history, or restore it from a backup"
                                  ) from None

    def _open(self) -> None:
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "subgraphs" not in columns:  # a database from before runs kept their resolved subgraphs
            self._db.execute("ALTER TABLE runs ADD COLUMN subgraphs TEXT")
        if "sweep" not in columns:  # a database from before sweeps: the runs it holds belong to none
            self._db.execute("ALTER TABLE runs ADD COLUMN sweep TEXT")
        if "options" not in columns:  # a database from before run options: its runs ran with the server's
            self._db.execute("ALTER TABLE runs ADD COLUMN options TEXT")
        self._db.execute("CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep, seq)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- runs ---------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """After a crash: runs that were executing failed; queued ones stay queued. Returns the failed ids."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM runs WHERE status = 'running'").fetchall()
            self._db.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE status = 'running'",
                             (SERVER_STOPPED, time.time()))
        return [row["id"] for row in rows]

    def add_run(self, workflow: dict[str, Any], params: dict[str, Any],
                subgraphs: dict[str, Any] | None = None,
                on_added: Callable[[dict[str, Any]], None] | None = None,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue a run. `subgraphs` maps each `workflow:<name>` it uses to the document that name had
        when the run was validated (see app.library_resolver). `on_added(summary)` is called before
        the worker can claim the run (the server announces `run_queued` there, so that it always
        comes before the run's `run_started`, whichever thread queued it)."""
        run_id = uuid.uuid4().hex
        name = workflow.get("name") if isinstance(workflow.get("name"), str) else None
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, status, name, workflow, params, created_at, subgraphs, options) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (run_id, name, _dumps(workflow), _dumps(params), time.time(), _dumps(subgraphs or {}),
                 None if options is None else _dumps(options)),
            )
            row = self._db.execute(f"SELECT {_SUMMARY_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            summary = _summary(row)
            if on_added is not None:
                on_added(summary)
        return summary

    def add_sweep(self, workflow: dict[str, Any], params: list[dict[str, Any]],
                  subgraphs: dict[str, Any] | None = None,
                  on_added: Callable[[str, list[dict[str, Any]]], None] | None = None
                  ) -> tuple[str, list[dict[str, Any]]]:
        """Queue one run per params, all at once and grouped under one sweep id; returns (id, summaries).
        `subgraphs` and `on_added(sweep id, summaries)` as for add_run, shared by every run of the sweep."""
        sweep_id = uuid.uuid4().hex
        name = workflow.get("name") if isinstance(workflow.get("name"), str) else None
        document, now, snapshot = _dumps(workflow), time.time(), _dumps(subgraphs or {})
        ids = [uuid.uuid4().hex for _ in params]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO runs (id, status, name, workflow, params, created_at, sweep, subgraphs) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    [(run_id, name, document, _dumps(p), now, sweep_id, snapshot)
                     for run_id, p in zip(ids, params, strict=True)])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            rows = self._db.execute(f"SELECT {_SUMMARY_COLUMNS} FROM runs WHERE sweep = ? ORDER BY seq",
                                    (sweep_id,)).fetchall()
            summaries = [_summary(row) for row in rows]
            if on_added is not None:
                on_added(sweep_id, summaries)
        return sweep_id, summaries

    def claim_next(self) -> dict[str, Any] | None:
        """Mark the oldest queued run running and return it (with its workflow), or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_ALL_COLUMNS}, subgraphs FROM runs WHERE status = 'queued' "
                                   "ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            now = time.time()
            self._db.execute("UPDATE runs SET status = 'running', started_at = ? WHERE seq = ?", (now, row["seq"]))
        record = _full(row)
        record["status"], record["started_at"] = "running", iso(now)
        # None for a run queued by a server that did not keep them: its subgraphs resolve as they are now
        record["subgraphs"] = None if row["subgraphs"] is None else json.loads(row["subgraphs"])
        return record

    def requeue(self, run_id: str) -> bool:
        """A running run whose executor was lost (a Ray worker) goes back to the queue, in its place."""
        with self._lock:
            cursor = self._db.execute("UPDATE runs SET status = 'queued', started_at = NULL "
                                      "WHERE id = ? AND status = 'running'", (run_id,))
        return cursor.rowcount == 1

    def finish_run(self, run_id: str, status: str, *, outputs: dict[str, list[str]] | None = None,
                   values: dict[str, Any] | None = None, executed: list[str] | None = None,
                   cached: list[str] | None = None, seconds: dict[str, float] | None = None,
                   error: str | None = None, failed_node: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, outputs = ?, output_values = ?, executed = ?, "
                "cached = ?, seconds = ?, error = ?, failed_node = ? WHERE id = ?",
                (status, time.time(), _dumps(outputs or {}), _dumps(values or {}), _dumps(executed or []),
                 _dumps(cached or []), _dumps(seconds or {}), error, failed_node, run_id),
            )

    def cancel_queued(self, run_id: str) -> bool:
        """Cancel a run that has not started; False when it is not queued (any more)."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ?, error = 'cancelled before it started' "
                "WHERE id = ? AND status = 'queued'", (time.time(), run_id))
        return cursor.rowcount == 1

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_ALL_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _full(row)

    def list_runs(self, status: str | None, limit: int, before: int | None, sweep: str | None = None
                  ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first. `before` is the cursor (a run's `seq`) from the previous page's `next`."""
        clauses: list[str] = []
        args: list[str | int] = []
        if sweep is not None:
            clauses.append("sweep = ?")
            args.append(sweep)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if before is not None:
            clauses.append("seq < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(f"SELECT {_SUMMARY_COLUMNS} FROM runs {where} ORDER BY seq DESC LIMIT ?",
                                    (*args, limit + 1)).fetchall()
        page = [_summary(row) for row in rows[:limit]]
        return page, (page[-1]["seq"] if len(rows) > limit else None)

    def queue_length(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM runs WHERE status = 'queued'").fetchone()[0]

    # -- saved workflows ------------------------------------------------------------------------

    def list_workflows(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT name, document, created_at, updated_at FROM workflows ORDER BY name"
                                    ).fetchall()
        result = []
        for row in rows:
            document = json.loads(row["document"])
            description = document.get("description") if isinstance(document.get("description"), str) else None
            result.append({"name": row["name"], "description": description,
                           "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])})
        return result

    def get_workflow(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT document FROM workflows WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row["document"])

    def put_workflow(self, name: str, document: dict[str, Any]) -> bool:
        """Create or replace; True when it was created."""
        now = time.time()
        with self._lock:
            existed = self._db.execute("SELECT 1 FROM workflows WHERE name = ?", (name,)).fetchone() is not None
            self._db.execute(
                "INSERT INTO workflows (name, document, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
                (name, _dumps(document), now, now),
            )
        return not existed

    def delete_workflow(self, name: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM workflows WHERE name = ?", (name,))
        return cursor.rowcount == 1


def _summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "seq": row["seq"],
        "status": row["status"],
        "name": row["name"],
        "params": json.loads(row["params"]),
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "outputs": json.loads(row["outputs"]),
        "executed": json.loads(row["executed"]),
        "cached": json.loads(row["cached"]),
        "seconds": json.loads(row["seconds"]),
        "error": row["error"],
        "failed_node": row["failed_node"],
        "sweep": row["sweep"],
        "options": json.loads(row["options"]) if row["options"] else {},
    }


def _full(row: sqlite3.Row) -> dict[str, Any]:
    record = _summary(row)
    record["workflow"] = json.loads(row["workflow"])
    record["values"] = json.loads(row["output_values"])
    return record
