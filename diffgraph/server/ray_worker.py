"""`diffgraph serve --backend ray`: the queue's runs execute on a Ray cluster instead of in-process.

The SQLite queue stays the source of truth: a run is claimed (`running`) when it is handed to an
idle actor (one per CPU slot, or per GPU for `--device cuda`), finished when its result comes back,
and put back in the queue when its actor is lost with its node. Files come back as bytes into the
server's outputs folder. What differs from the local worker: no step progress or previews over
the WebSocket (only run_started/finished events), cancelling a running run takes effect when it
comes back (its result is then dropped), and `workflow:<name>` subgraphs resolve on the workers
against the shipped templates only, not the server's saved library.
"""

from __future__ import annotations

import logging
from typing import Any

from diffgraph.engine import CancelToken, WorkflowError

from .worker import Worker

log = logging.getLogger(__name__)


class RayWorker(Worker):
    """The Worker interface (start, wake, cancel, stop) over actors on a Ray cluster."""

    def __init__(self, *args: Any, address: str | None = None, cpus_per_worker: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.address = address
        self.cpus_per_worker = cpus_per_worker
        self._running: dict[str, CancelToken] = {}
        self.requeued = 0

    @property
    def current_run(self) -> str | None:
        with self._lock:
            return next(iter(self._running), None)

    def cancel(self, run_id: str) -> str | None:
        with self._lock:
            if self.store.cancel_queued(run_id):
                return "cancelled"
            token = self._running.get(run_id)
            if token is not None:
                token.cancel()
                return "cancelling"
        return None

    def stop(self, timeout: float = 10.0) -> bool:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _main(self) -> None:
        import ray
        from ray.exceptions import RayError, RayTaskError

        from diffgraph.ray_backend import SweepWorker, write_new_file

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False)
        gpu = self.device.startswith("cuda")
        resource, per_worker = ("GPU", 1.0) if gpu else ("CPU", self.cpus_per_worker)
        actor_class = ray.remote(SweepWorker).options(num_cpus=0 if gpu else self.cpus_per_worker,
                                                      num_gpus=1 if gpu else 0, max_restarts=0)
        threads = max(1, int(self.cpus_per_worker))
        slots = max(1, int(ray.cluster_resources().get(resource, 0) // per_worker))
        idle: list[Any] = [actor_class.remote(threads, False) for _ in range(slots)]
        in_flight: dict[Any, tuple[Any, dict[str, Any]]] = {}
        log.info("running the queue on Ray: %d workers of %s %s", slots, per_worker, resource)
        while not self._stopping.is_set() or in_flight:
            while idle and not self._stopping.is_set():
                with self._lock:
                    record = self.store.claim_next()
                    if record is not None:
                        self._running[record["id"]] = CancelToken()
                if record is None:
                    break
                try:
                    self.compile_run(record)  # the document was validated at submit; it still is
                except WorkflowError as exc:
                    self._finish_invalid(record, exc)
                    continue
                actor = idle.pop()
                ref = actor.run_one.remote(record["workflow"], record["params"], self.device, self.dtype,
                                           record["id"])
                in_flight[ref] = (actor, record)
                self._publish({"type": "run_started", "run_id": record["id"]})
            if not in_flight:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, record = in_flight.pop(ref)
                run_id = record["id"]
                try:
                    answer = ray.get(ref)
                except RayTaskError as exc:
                    self._record_result(run_id, "failed", error=f"the run failed on its Ray worker: {exc.cause!r}")
                    idle.append(actor)
                    continue
                except RayError:  # the actor or its node is gone: back to the queue, another runs it
                    with self._lock:
                        self._running.pop(run_id, None)
                        self.store.requeue(run_id)
                    self.requeued += 1
                    log.warning("run %s lost its Ray worker; queued again", run_id)
                    spare = int(ray.available_resources().get(resource, 0) // per_worker)
                    idle.extend(actor_class.remote(threads, False) for _ in range(min(spare, 1)))
                    continue
                idle.append(actor)
                self._store_answer(run_id, answer, write_new_file)
        for actor in idle:
            ray.kill(actor)

    def _store_answer(self, run_id: str, answer: dict[str, Any], write_new_file: Any) -> None:
        result = answer["result"]
        with self._lock:
            token = self._running.get(run_id)
        if token is not None and token.cancelled:
            self._record_result(run_id, "cancelled", error="cancelled while it ran on the cluster")
            return
        self.outputs_root.mkdir(parents=True, exist_ok=True)
        outputs = {node: [write_new_file(self.outputs_root, name, data) for name, data in files]
                   for node, files in answer["files"].items()}
        self._record_result(run_id, result["status"], outputs=outputs, values=result["values"],
                     executed=result["executed"], cached=result["cached"], seconds=result["seconds"],
                     error=result["error"], failed_node=result["failed_node"])

    def _record_result(self, run_id: str, status: str, **fields: Any) -> None:
        with self._lock:
            self._running.pop(run_id, None)
        self.store.finish_run(run_id, status, **fields)
        kind = {"succeeded": "run_finished", "failed": "run_failed", "cancelled": "run_cancelled"}[status]
        self._publish({"type": kind, "run_id": run_id, "status": status, "outputs": fields.get("outputs", {}),
                       "error": fields.get("error")})

    def _finish_invalid(self, record: dict[str, Any], exc: WorkflowError) -> None:
        problems = "; ".join(str(issue) for issue in exc.issues)
        self._record_result(record["id"], "failed", error=f"invalid workflow: {problems}")


