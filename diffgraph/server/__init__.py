"""The aiohttp server behind `diffgraph serve`: REST + WebSocket, a SQLite queue/history/library, and
its security. The routes are described by GET /api/openapi.json.

Data directory (`--data-dir`, default `$XDG_DATA_HOME/diffgraph` or `~/.local/share/diffgraph`):
  diffgraph.db   SQLite (WAL): runs (queue + history) and the saved-workflow library
  outputs/       what output nodes write; served by GET /api/outputs/<name relative to this folder>
  uploads/       POST /api/uploads stores images here as `<random hex>.<format>`
  cache/         the executor's disk cache (memory + disk tiers shared by every run)

Runs: POST /api/runs validates then queues (202 {id, seq}); one worker thread executes runs in
submission order (`seq`). A server killed mid-run marks that run failed ("server stopped") when it
starts again and then runs what was queued. History (GET /api/runs) is newest first; `limit`
(1-500, default 50) and a cursor: pass the page's `next` as `before` to get the older page.

Uploads: the response's `path` is the absolute path of the stored file, which is what LoadImage's
`image` param takes; `name` is the file name inside uploads/. The client's file name is ignored.

Subgraphs in submitted workflows (`workflow:<name>`) resolve to a saved workflow of that name, else a
shipped template; never to a file path the request names.

WebSocket /ws (or /ws?run=<id> for one run, which first receives a `run_status` snapshot): JSON text
frames, one event each (run_queued, run_started, node_cached, node_started, progress, node_finished,
node_failed, run_finished, run_failed, run_cancelled), and binary preview frames: a 4-byte big-endian
length N, N bytes of JSON header {type: preview, run_id, node, step, total, format: jpeg}, then JPEG.

Security (see security.py): loopback by default; a token is required beyond loopback (`--token` or
DIFFGRAPH_TOKEN) and then for every route but /api/health, as `Authorization: Bearer`, `?token=` or
the `diffgraph_token` cookie (set when the editor is opened as `/?token=...`). Cross-origin
state-changing requests and WebSocket upgrades get 403 (`Origin: null` too; no Origin header, as from
curl, is allowed); foreign Host headers get 403 (`--allow-host` adds names).
"""
