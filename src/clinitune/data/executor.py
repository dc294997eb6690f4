"""Run a per-chunk step (:mod:`clinitune.data.chunks`) over many chunks.

- ``local``: in this process when there is one worker or one chunk, else a process pool
  (``spawn``: the tokenizer's Rust threads and torch do not survive ``fork``). Results come back
  in chunk order, so the output does not depend on the number of workers.
- ``datatrove``: datatrove's ``LocalPipelineExecutor`` runs a :class:`ChunkStep` with one task
  per chunk; each task writes its result as JSON, read back here in chunk order. The same step
  is what a datatrove cluster executor would run (see docs/cluster.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clinitune.errors import StageError
from clinitune.progress import bar

Step = Callable[[dict[str, Any]], dict[str, Any]]


def n_workers(requested: int) -> int:
    """``requested``, or all the cores this process may use when it is 0."""
    if requested:
        return requested
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Pool:
    """Worker processes shared by every per-chunk step of one ``prepare`` (each worker imports
    the tokenizer and builds the PHI scanner once, not once per step). In-process when there
    is one worker or one chunk."""

    def __init__(self, workers: int, n_jobs: int) -> None:
        self.workers = min(n_workers(workers), max(n_jobs, 1))
        self._pool: Any = None

    def __enter__(self) -> Pool:
        if self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context("spawn")
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def map(self, step: Step, jobs: list[dict[str, Any]], weights: list[int], desc: str):
        results: list[dict[str, Any]] = []
        with bar(desc, total=sum(weights), unit="note") as b:
            if self._pool is None:
                for job, w in zip(jobs, weights, strict=True):
                    results.append(step(job))
                    b.update(w)
                return results
            futures = [self._pool.submit(step, job) for job in jobs]
            for fut, w in zip(futures, weights, strict=True):
                results.append(fut.result())
                b.update(w)
        return results


def run_chunks(
    step: Step,
    jobs: list[dict[str, Any]],
    *,
    workers: int,
    executor: str,
    work_dir: Path,
    desc: str,
    weights: list[int] | None = None,
    pool: Pool | None = None,
    slurm: Any = None,
) -> list[dict[str, Any]]:
    """``[step(job) for job in jobs]``, in parallel; ``weights`` (notes per job) drive the bar."""
    weights = weights or [1] * len(jobs)
    if executor in ("datatrove", "datatrove_slurm"):
        return _run_datatrove(
            step, jobs, workers=workers, work_dir=work_dir, desc=desc, slurm=slurm
        )
    if pool is not None:
        return pool.map(step, jobs, weights, desc)
    with Pool(workers, len(jobs)) as own:
        return own.map(step, jobs, weights, desc)


class _ChunkStepFactory:
    """Builds the datatrove PipelineStep lazily (datatrove is an optional dependency)."""

    cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.cls is None:
            from datatrove.pipeline.base import PipelineStep

            class ChunkStep(PipelineStep):  # type: ignore[misc]
                """Runs ``step`` on the jobs of this rank (jobs[rank::world_size]) and writes
                each result to ``<results>/<job index>.json``."""

                name = "clinitune chunk step"
                type = "clinitune"

                def __init__(self, step: Step, jobs: list[dict[str, Any]], results: str):
                    super().__init__()
                    self.step = step
                    self.jobs = jobs
                    self.results = results

                def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
                    for i in range(rank, len(self.jobs), world_size):
                        res = self.step(self.jobs[i])
                        path = Path(self.results) / f"{i:06d}.json"
                        tmp = path.with_suffix(".tmp")
                        tmp.write_text(json.dumps(res))
                        tmp.replace(path)
                        self.stat_update("chunks")
                    yield from data or []

            cls.cls = ChunkStep
        return cls.cls


def _run_datatrove(
    step: Step,
    jobs: list[dict[str, Any]],
    *,
    workers: int,
    work_dir: Path,
    desc: str,
    slurm: Any = None,
) -> list[dict[str, Any]]:
    try:
        from datatrove.executor import LocalPipelineExecutor
    except ImportError:
        raise StageError(
            "data.executor is 'datatrove' but datatrove is not installed: "
            "pip install 'clinitune[cluster]'"
        ) from None
    import shutil

    name = desc.split()[0]
    results = work_dir / f"results-{name}"
    logs = work_dir / f"datatrove-{name}"
    for d in (results, logs):  # a rerun must not skip tasks or read stale results
        shutil.rmtree(d, ignore_errors=True)
    results.mkdir(parents=True)
    pipeline = [_ChunkStepFactory.get()(step, jobs, str(results))]
    if slurm is not None:
        _run_slurm(pipeline, len(jobs), logs, name, slurm)
    else:
        ex = LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=len(jobs),
            workers=min(n_workers(workers), len(jobs)),
            logging_dir=str(logs),
            skip_completed=False,
            start_method="spawn",
        )
        ex.run()
    out = []
    for i in range(len(jobs)):
        path = results / f"{i:06d}.json"
        if not path.exists():
            raise StageError(f"datatrove task for chunk {i} wrote no result: see {logs}")
        out.append(json.loads(path.read_text()))
    return out


def _run_slurm(pipeline: list[Any], tasks: int, logs: Path, name: str, spec: Any) -> None:
    """Submit one array job (a task per chunk) and wait until every task has written
    datatrove's completion marker; the driver then goes on with the next global step."""
    import time

    from datatrove.executor import SlurmPipelineExecutor

    ex = SlurmPipelineExecutor(
        pipeline=pipeline,
        tasks=tasks,
        time=spec.time,
        partition=spec.partition,
        cpus_per_task=spec.cpus_per_task,
        mem_per_cpu_gb=spec.mem_per_cpu_gb,
        qos=spec.qos,
        job_name=f"clinitune-{name}",
        venv_path=spec.venv_path,
        env_command=spec.env_command,
        sbatch_args=dict(spec.sbatch_args),
        logging_dir=str(logs),
        skip_completed=True,  # logs is fresh, so nothing stale is skipped; needed for polling
    )
    ex.run()  # sbatch
    deadline = time.monotonic() + spec.timeout_s
    with bar(f"{name} (slurm job {ex.job_id})", total=tasks, unit="chunk") as b:
        while True:
            done = sum(ex.is_rank_completed(r) for r in range(tasks))
            b.update(done - b.n)
            if done == tasks:
                return
            if time.monotonic() > deadline:
                raise StageError(
                    f"slurm job {ex.job_id}: {tasks - done} of {tasks} chunk tasks unfinished "
                    f"after {spec.timeout_s:.0f}s; see the logs in {logs}"
                )
            time.sleep(spec.poll_s)
