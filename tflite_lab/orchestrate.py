"""The cell orchestration shared by the Matrix page, ``matrix`` and ``zoo``: which cells, in what
order, which are redone, and the progress of each, on any executor (``executor.py``).

Results are kept in two plain dicts the caller owns (the page's session state, the CLI's locals):
``done[key]`` a cell's report, ``failed[key]`` a failure record (``failure_record``). A key is the
cell id (``saved_model-int8``), or ``<model>/<cell id>`` when several models share one run.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .errors import Cancelled, TFLiteLabError, wrapped
from .types import SourceFormat

AEQ_CAN_HELP = ("calibration recorded no value range",)     # TF's "Empty min/max" on integer inputs
RETRIED_KINDS = ("WorkerError",)    # a crash or timeout may be the machine's; refusals and conversion failures are results


def cell_id(route: str, optimization: str, int8_io: bool = False) -> str:
    return f"{route}-{optimization}" + ("-int8io" if int8_io else "")


@dataclass(frozen=True)
class Cell:
    route: str
    optimization: str
    int8_io: bool = False

    @property
    def id(self) -> str:
        return cell_id(self.route, self.optimization, self.int8_io)


@dataclass(frozen=True)
class CellJob:
    """One cell to run on one prepared model; ``key`` names it in ``done``/``failed``."""

    key: str
    cell: Cell
    prepared: dict
    targets: dict | None = None         # {target name: options}: also judged there (targets/)


def failure_record(e: TFLiteLabError) -> dict:
    return {"message": e.user_message, "detail": e.detail, "kind": type(e).__name__}


def plan_cells(fmt: SourceFormat | str, routes=None, optimizations=None) -> tuple[list[Cell], dict[str, str]]:
    """The cells asked for, in capability-table order: those that can run, and the refused ones
    with their reason (``{cell id: reason}``). ``routes``/``optimizations`` default to all."""
    from .routes import refusal
    from .types import Optimization, Route
    routes = [Route(r).value for r in routes] if routes else [r.value for r in Route]
    opts = [Optimization(o).value for o in optimizations] if optimizations else [o.value for o in Optimization]
    runnable, refused = [], {}
    for r in routes:
        for o in opts:
            reason = refusal(r, o, fmt)
            if reason:
                refused[cell_id(r, o)] = reason
            else:
                runnable.append(Cell(r, o))
    return runnable, refused


def pending_cells(fmt: SourceFormat | str, done: dict, failed: dict, prefix: str = "") -> list[Cell]:
    """Supported cells not computed yet: a worker crash or timeout is retried; refusals and
    conversion failures are results and stay."""
    from .routes import supported_cells
    todo = []
    for route, opt in supported_cells(SourceFormat(fmt)):
        key = prefix + cell_id(route.value, opt.value)
        if key in done or (key in failed and failed[key]["kind"] not in RETRIED_KINDS):
            continue
        todo.append(Cell(route.value, opt.value))
    return todo


def prepare_key(source: dict, spec, bench) -> tuple:
    """What a prepared model depends on: the model bytes, the samples, the benchmark settings."""
    return source["sha256"], spec.key(), tuple(asdict(bench).values())


def prepare(executor, source: dict, spec, bench, progress=None, cancel=None) -> dict:
    """Samples fixed, reference outputs computed and the model exported (the store keeps it: a
    model prepared before is read back here, without starting a worker)."""
    from .pipeline import stored_prepared
    return stored_prepared(source, spec, bench) or executor.run("prepare", progress=progress, source=source,
                                                                spec=spec, bench=bench, cancel=cancel)


def _cell_key(prepared: dict, cell: Cell, bench) -> str:
    from .store import key_of
    return key_of(kind="cell-report", model=prepared["source"]["sha256"], samples=prepared["samples_sha"],
                  cell=cell.id, int8_io=cell.int8_io, bench=asdict(bench))


def stored_cell(store, prepared: dict, cell: Cell, bench) -> dict | None:
    """A cell's report from an earlier run (same model bytes, samples, cell and bench settings) whose
    artifacts are still in the store; None when it has to be computed."""
    rep = store.get_json("reports", _cell_key(prepared, cell, bench))
    if not rep:
        return None
    paths = [rep.get(k) for k in ("tflite_path", "samples_path", "reference_path", "predictions_path")]
    if not all(Path(p).exists() for p in paths if p):
        return None
    # Served whole: its conversion and its timings are the earlier run's, dated by it.
    return {**rep, "cached": True, "cached_at": rep.get("cached_at") or rep.get("converted_at"), "cached_cell": True,
            "served_from_store": True}


def _storable(report: dict, bench) -> bool:
    """Whole: timed when timing was asked (a failed bench is not served again as the answer)."""
    return not bench.enabled or bool((report.get("latency") or {}).get("tflite"))


def store_cell(store, prepared: dict, cell: Cell, bench, report: dict) -> None:
    store.put_json("reports", _cell_key(prepared, cell, bench), report)


def run_cell(executor, cell: Cell, prepared: dict, bench, done: dict, failed: dict, key: str | None = None,
             progress=None, cancel=None, targets: dict | None = None, store=None) -> dict:
    """Convert and evaluate one cell, keeping its report in ``done`` or its failure in ``failed``.
    With a ``store``, a cell (without targets) stored by an earlier run is served from it, and a
    fresh one is stored.

    Raises the cell's TFLiteLabError after recording it.
    """
    key = key or cell.id
    if store is not None and not targets:
        stored = stored_cell(store, prepared, cell, bench)
        if stored is not None:
            done[key] = stored
            failed.pop(key, None)
            return stored
    try:
        report = executor.run("cell", progress=progress, prepared=prepared, route=cell.route,
                              optimization=cell.optimization, int8_io=cell.int8_io, bench=bench, cancel=cancel,
                              **({"targets": targets} if targets else {}))
    except Cancelled:
        raise                   # nothing of a cancelled job is kept: the cell is simply pending again
    except TFLiteLabError as e:
        failed[key] = failure_record(e)
        done.pop(key, None)
        raise
    done[key] = report
    failed.pop(key, None)
    if store is not None and not targets and _storable(report, bench):
        store_cell(store, prepared, cell, bench, report)
    return report


def run_cells(executor, jobs: list[CellJob], bench, done: dict, failed: dict, render=None, on_finish=None,
              cancel: threading.Event | None = None, store=None) -> None:
    """Run cells ``executor.size`` at a time, in the given order.

    ``store`` (a Store): a cell whose report is there from an earlier run (``stored_cell``) is
    served from it, not run; every cell that runs is stored for the next time. Cells with targets
    are always run.

    ``cancel``, once set (from any thread), stops the running cells (their workers are killed) and
    the queued ones: they end as ``cancelled``, in neither dict, so they are pending again.

    ``render(states)`` is called from the calling thread whenever a cell moves on and every 0.25 s
    (elapsed times keep moving); ``states[key] = (step, started)`` with step ``queued``, a job
    stage (``convert``, ``run tflite``, ...), ``done``, ``failed`` or ``cancelled``. ``on_finish(key)`` is called
    from the calling thread once a cell's result is in ``done`` or ``failed``. Results go straight
    into the dicts, so a cell that finishes after the caller stopped listening is still kept.
    """
    served = []
    for j in jobs if store is not None else []:
        rep = None if j.targets else stored_cell(store, j.prepared, j.cell, bench)
        if rep is not None:
            done[j.key] = rep
            failed.pop(j.key, None)
            served.append(j)
    # Served cells stay in the progress table next to the ones that run.
    states = {j.key: ("done", time.monotonic()) for j in served}
    if served:
        if render:
            render(dict(states))
        for j in served:
            if on_finish:
                on_finish(j.key)
        jobs = [j for j in jobs if j not in served]
    if jobs:
        _run_fresh(executor, jobs, bench, done, failed, render, on_finish, cancel, states)
    for j in jobs if store is not None else []:
        if not j.targets and j.key in done and not done[j.key].get("cached_cell") and _storable(done[j.key], bench):
            store_cell(store, j.prepared, j.cell, bench, done[j.key])


def _model_key(job: CellJob) -> str:
    src = job.prepared.get("source") if isinstance(job.prepared, dict) else None
    return (src or {}).get("sha256") or str(id(job.prepared))


class _ModelAffinity:
    """The queue of cells, handed out so that a thread stays on one model while it has cells left and
    a free thread takes a model nobody works on. On Ray one process serves one upload, so a model's
    cells spread over two threads start a second process and import TensorFlow again; locally it
    only changes the order."""

    def __init__(self, jobs: list[CellJob]):
        self._lock = threading.Lock()
        self._left = list(jobs)
        self._on: dict[str, int] = {}          # model -> threads working on it

    def take(self, model: str | None) -> CellJob | None:
        with self._lock:
            if not self._left:
                return None
            pick = (next((j for j in self._left if _model_key(j) == model), None) if model else None) \
                or next((j for j in self._left if not self._on.get(_model_key(j))), None) or self._left[0]
            self._left.remove(pick)
            if model:
                self._on[model] -= 1
            self._on[_model_key(pick)] = self._on.get(_model_key(pick), 0) + 1
            return pick

    def leave(self, model: str | None) -> None:
        with self._lock:
            if model:
                self._on[model] -= 1


def _run_fresh(executor, jobs: list[CellJob], bench, done: dict, failed: dict, render, on_finish, cancel,
               states: dict) -> None:
    events: queue.Queue = queue.Queue()
    # No cell is timed while another converts: conversions first, then the bench phase.
    convert_only = replace(bench, enabled=False)

    def one(job: CellJob) -> None:
        try:
            if cancel is not None and cancel.is_set():    # still queued when the run was cancelled
                events.put((job.key, "cancelled"))
                return
            run_cell(executor, job.cell, job.prepared, convert_only, done, failed, key=job.key,
                     progress=lambda step, _t: events.put((job.key, step)), cancel=cancel, targets=job.targets)
            events.put((job.key, "done"))
        except Cancelled:
            events.put((job.key, "cancelled"))
        except TFLiteLabError:
            events.put((job.key, "failed"))

    states.update({j.key: ("queued", None) for j in jobs})
    size = max(1, executor.size)
    queue_ = _ModelAffinity(jobs)

    def serve() -> None:
        model = None
        while (job := queue_.take(model)) is not None:
            one(job)
            model = _model_key(job)
        queue_.leave(model)

    pool = ThreadPoolExecutor(size, thread_name_prefix="cells")
    try:
        futures = [pool.submit(serve) for _ in range(min(size, len(jobs)))]
        if render:
            render(states)
        while not all(f.done() for f in futures) or not events.empty():
            try:
                key, step = events.get(timeout=0.25)
            except queue.Empty:
                if render:
                    render(states)
                continue
            started = states[key][1] or time.monotonic()
            states[key] = (step, started)
            if render:
                render(states)
            if step in ("done", "failed") and on_finish and not bench.enabled:
                on_finish(key)
        for f in futures:
            f.result()                  # a bug in a thread surfaces here, not silently
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if bench.enabled:
        bench_phase(executor, jobs, bench, done, states, render, cancel)
        for j in jobs:                  # finished once timed, so a result is never shown without its latency
            if on_finish and (j.key in done or j.key in failed):
                on_finish(j.key)


def bench_phase(executor, jobs: list[CellJob], bench, done: dict, states: dict | None = None, render=None,
                cancel: threading.Event | None = None) -> None:
    """Time the converted cells one model at a time, one job at a time, after every conversion of
    the run: the original and its .tflite files with the same threads, on an otherwise idle
    executor; the bench job itself holds the server's bench gate (``activity.py``), so no job of
    another session or CLI run sharing the store starts meanwhile either, and one that still ran
    is named in the conditions. Each report's ``latency`` gets the numbers and the conditions (with
    the phase's start and end, ``alone``, ``concurrent``). A failed bench leaves the cells'
    results, with a warning."""
    states = states if states is not None else {}
    groups: dict[int, list[CellJob]] = {}
    for j in jobs:
        if j.key in done and done[j.key].get("tflite_path"):
            groups.setdefault(id(j.prepared), []).append(j)
    for group in groups.values():
        for j in group:
            states[j.key] = ("benchmark", time.monotonic())
        if render:
            render(states)
        try:
            timed = executor.run("bench", prepared=group[0].prepared, bench=bench, cancel=cancel,
                                 tflite_paths={j.key: done[j.key]["tflite_path"] for j in group})
        except TFLiteLabError as e:
            for j in group:
                done[j.key] = {**done[j.key], "warnings": list(done[j.key].get("warnings", []))
                               + [wrapped("Latency not measured: ", e.user_message)]}
        else:
            for j in group:
                done[j.key] = {**done[j.key], "latency": {"original": timed["original"], "tflite": timed["tflite"][j.key],
                                                           "conditions": timed["conditions"]}}
        for j in group:
            states[j.key] = ("done", states[j.key][1])
        if render:
            render(states)


class Progress:
    """Counts of a run for a progress line: cells done and failed, and the time left at this pace."""

    def __init__(self, total: int):
        self.total, self.ok, self.failed = total, 0, 0
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def finished(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1

    @property
    def count(self) -> int:
        return self.ok + self.failed

    def eta_s(self) -> float | None:
        if not self.count:
            return None
        return (time.monotonic() - self.t0) / self.count * (self.total - self.count)

    def line(self) -> str:
        eta = self.eta_s()
        return (f"{self.count}/{self.total} cells ({self.ok} done, {self.failed} failed), "
                f"{time.monotonic() - self.t0:.0f} s" + (f", ETA {eta:.0f} s" if eta is not None and self.count < self.total else ""))


def aeq_can_help(failure: dict, optimization: str) -> bool:
    """A failed cell's record (TFLiteLabError.to_dict) is one that ai-edge-quantizer may convert."""
    return (optimization in ("int8", "int16x8") and failure.get("kind") == "ConversionError"
            and any(h in failure.get("message", "") for h in AEQ_CAN_HELP))
