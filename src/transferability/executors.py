"""Where the networks of a study train: here, in local worker processes, or as Ray tasks.

Every executor runs the same function on the same job, so rows and checkpoints do not depend
on where a network trained. Workers only train and write their network's checkpoint; the
calling process alone writes the results table and MLflow. A network that fails is retried
(study.retries times) and then reported, without stopping the others.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

import torch

from transferability import data as data_mod
from transferability.config import Config, validate
from transferability.splits import Split

# (job, (row, history) or None, error message or None)
Outcome = tuple[object, tuple[dict, list] | None, str | None]

_STUDY_CACHE: dict = {}


def worker_networks(cfg_json: str, splits_json: str, root: str):
    """The worker's Networks, built once per process (the dataset is loaded once)."""
    from transferability.networks import Networks

    key = (cfg_json, splits_json, root)
    if key not in _STUDY_CACHE:
        _STUDY_CACHE.clear()
        if Path(root).is_dir():
            os.chdir(root)  # relative paths in the settings mean the same thing as for the caller
        cfg = validate(json.loads(cfg_json))
        splits = [
            Split(**{**s, "A": tuple(s["A"]), "B": tuple(s["B"])}) for s in json.loads(splits_json)
        ]
        _STUDY_CACHE[key] = Networks(cfg, splits, data_mod.load(Path(cfg.data.prepared)))
    return _STUDY_CACHE[key]


def train_job(
    cfg_json: str, splits_json: str, root: str, job, threads: int | None, base_md5: str = ""
):
    """Train one network in a worker: the unit of work of every executor. `base_md5`: the md5
    that the row of the base it copies records (`Networks.build`)."""
    if threads:
        torch.set_num_threads(threads)
    return worker_networks(cfg_json, splits_json, root).run(job, base_md5)


def worker_threads(cfg: Config) -> int:
    """Threads per local worker: train.threads, or cores / study.workers however few jobs are
    left (a network's thread count, in its row's `machine` and the key of its saved state, is a
    setting, never the luck of the queue)."""
    return cfg.train.threads or max(1, (os.cpu_count() or 1) // cfg.study.workers)


def _die_with_parent() -> None:
    """On Linux, ask for SIGTERM when the driver dies, even by kill -9 (no orphaned workers)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their queue closes
        return
    if os.getppid() == 1:  # the driver died before prctl took effect
        os._exit(1)


def _init_local_worker(gpu_queue) -> None:
    _die_with_parent()
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


def gpu_of(worker: int, gpus: int) -> int:
    """The GPU that local worker `worker` uses: round robin, so that several small networks
    share each GPU evenly (8 workers on 2 GPUs: 0, 1, 0, 1, ...)."""
    if gpus < 1:
        raise ValueError("gpu_of needs at least one GPU")
    return worker % gpus


def _retryable(e: BaseException) -> bool:
    """A diverged run or a wrong checkpoint fails the same way again: not worth a retry."""
    from transferability.networks import CheckpointMismatch
    from transferability.train import TrainingDiverged

    return not isinstance(e, TrainingDiverged | CheckpointMismatch | FileNotFoundError)


def _payload(cfg: Config, splits: list[Split]) -> tuple[str, str, str]:
    return (
        cfg.model_dump_json(),
        json.dumps([asdict(s) for s in splits]),
        str(Path.cwd()),
    )


def execute(networks, jobs: list, md5s: dict[str, str] | None = None) -> Iterator[Outcome]:
    """Train `jobs` (independent of each other) with the settings and splits of `networks` (a
    `networks.Networks`) and yield each outcome as it completes. A job copies its base only if
    the base's checkpoint has the md5 `md5s` gives for it (if any)."""
    if not jobs:
        return
    cfg, splits = networks.cfg, list(networks.splits.values())
    ex = cfg.study
    md5 = {j: (md5s or {}).get(j.source.network, "") if j.source else "" for j in jobs}
    if ex.executor == "ray":
        yield from _ray(cfg, splits, jobs, md5)
    elif ex.workers <= 1:
        for job in jobs:
            error = None
            for _ in range(ex.retries + 1):
                try:
                    yield job, networks.run(job, md5[job]), None
                    break
                except Exception as e:  # reported below, then the study goes on
                    error = f"{type(e).__name__}: {e}"
                    if not _retryable(e):
                        yield job, None, error
                        break
            else:
                yield job, None, error
    else:
        yield from _local_pool(cfg, splits, jobs, md5)


def _local_pool(cfg: Config, splits: list[Split], jobs: list, md5: dict) -> Iterator[Outcome]:
    """A pool of worker processes. A worker that dies (killed, out of memory) breaks the pool
    and every network in flight with it: each of those counts an attempt and is retried in a
    fresh pool, while the finished ones stand."""
    workers = min(cfg.study.workers, len(jobs))
    threads = worker_threads(cfg)
    ctx = mp.get_context("spawn")  # a clean interpreter: no inherited threads or CUDA state
    gpus = torch.cuda.device_count() if cfg.train.device in ("auto", "cuda") else 0
    payload = _payload(cfg, splits)
    attempts = {job: 0 for job in jobs}
    pending = list(jobs)
    while pending:
        gpu_queue = None
        if gpus:
            gpu_queue = ctx.Queue()
            for i in range(workers):
                gpu_queue.put(gpu_of(i, gpus))
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_local_worker, initargs=(gpu_queue,)
        ) as pool:
            running = {
                pool.submit(train_job, *payload, job, threads, md5[job]): job for job in pending
            }
            pending = []
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = running.pop(fut)
                    try:
                        yield job, fut.result(), None
                    except Exception as e:
                        attempts[job] += 1
                        error = f"{type(e).__name__}: {e}"
                        if isinstance(e, BrokenProcessPool):
                            error = f"its worker process died ({e}): killed, or out of memory?"
                        if attempts[job] > cfg.study.retries or not _retryable(e):
                            yield job, None, error
                            continue
                        try:
                            again = pool.submit(train_job, *payload, job, threads, md5[job])
                            running[again] = job
                        except BrokenProcessPool:
                            pending.append(job)  # retried in the next pool


def _ray(cfg: Config, splits: list[Split], jobs: list, md5: dict) -> Iterator[Outcome]:
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("study.executor=ray needs Ray: pip install 'ray==2.60.0'") from e
    if not ray.is_initialized():
        # RAY_ADDRESS names a running cluster; without it Ray starts a local one
        ray.init(
            address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False
        )
    use_gpu = cfg.train.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0
    threads = cfg.train.threads or 1
    task = ray.remote(
        num_cpus=threads,
        num_gpus=cfg.study.gpus_per_network if use_gpu else 0,
        max_retries=cfg.study.retries,
        retry_exceptions=True,
    )(train_job)
    payload = [ray.put(p) for p in _payload(cfg, splits)]
    pending = {task.remote(*payload, job, threads, md5[job]): job for job in jobs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        try:
            yield job, ray.get(done[0]), None
        except Exception as e:
            yield job, None, f"{type(e).__name__}: {e}"
