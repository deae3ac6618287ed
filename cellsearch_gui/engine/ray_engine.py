"""The Ray engine: shard tasks on a pool of Ray actors, one ``ShardWorker`` each (one model set loaded per
actor; a GPU per actor where the cluster has GPUs). The driver hands out one shard per idle actor, writes
every result into the shard store itself, and when a worker or its node dies, runs the lost shard again on
an actor still alive (or a new one), so every shard lands exactly once. Ray is imported only here, and
only when the engine is used."""

from __future__ import annotations

import os
import socket
from collections import Counter, deque
from pathlib import Path

from cellsearch_gui.core.app.sharded import ShardTask, ShardWorker
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.io.shards import ShardStore
from cellsearch_gui.core.jobs import CancelToken, Job, Progress

RAY_MISSING = ("the Ray engine needs Ray, which is not installed: pip install 'cellsearch_gui[cluster]' "
               "(or run with --engine local)")
MAX_ATTEMPTS = 3  # runs of one shard lost to dying workers before the job gives up
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TORCH_HOME")
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def import_ray():
    try:
        import ray
    except ImportError:
        raise CellSearchError(RAY_MISSING) from None
    return ray


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A host:port address that nothing answers on fails at once with a message, not after Ray's retries."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise CellSearchError(f"--ray-address '{address}' is not HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT "
                              "or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise CellSearchError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                              f"'ray start --head' there, or leave out --ray-address to run Ray on this "
                              "machine") from None


class _Actor:
    """What runs inside each Ray actor: the core's ShardWorker."""

    def __init__(self, shared: dict):
        self.worker = ShardWorker(shared)

    def run(self, task: ShardTask):
        return self.worker.run(task)

    def pid(self) -> int:
        return os.getpid()


class RayShards:
    """Shard tasks on ``workers`` Ray actors, on the cluster at ``address`` (None: a Ray started here)."""

    def __init__(self, address: str | None = None, workers: int = 2, cpus_per_worker: float = 1):
        self.address, self.workers, self.cpus_per_worker = address, max(1, workers), cpus_per_worker
        self.notes: list[str] = []
        self._ray = None
        self._started_here = False

    def __enter__(self) -> "RayShards":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self):
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        env = {k: v for k, v in os.environ.items() if k.startswith("CELLSEARCH_") or k in PASSED_ENV}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        options = {"runtime_env": {"env_vars": env}, "include_dashboard": False, "log_to_driver": False}
        if self.address:
            check_reachable(self.address)
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise CellSearchError(f"cannot join the Ray cluster at {self.address}: {exc}") from None
        else:
            ray.init(num_cpus=int(max(1, self.workers * self.cpus_per_worker)), **options)
            self._started_here = True
        self._ray = ray
        return ray

    def close(self) -> None:
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None

    def _actor_options(self, ray) -> tuple[int, dict]:
        """How many actors, each with which resources: a GPU each where the cluster has GPUs."""
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            if gpus < self.workers:
                self.notes.append(f"the cluster has {gpus} GPUs: using {gpus} workers, one per GPU, "
                                  f"not {self.workers}")
            return min(self.workers, gpus), {"num_gpus": 1, "num_cpus": self.cpus_per_worker}
        cpus = int(resources.get("CPU", 0) // self.cpus_per_worker)
        if cpus < self.workers:
            self.notes.append(f"the cluster has room for {cpus} workers of {self.cpus_per_worker} CPU; "
                              f"using {max(1, cpus)}, not {self.workers}")
        return max(1, min(self.workers, cpus)), {"num_cpus": self.cpus_per_worker}

    def run(self, tasks: list[ShardTask], shared: dict, store: ShardStore, token: CancelToken) -> Job[None]:
        ray = self.connect()
        from ray import exceptions

        lost_worker = (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.NodeDiedError,
                       exceptions.ObjectLostError, exceptions.OwnerDiedError)
        n_actors, resources = self._actor_options(ray)
        remote = ray.remote(**resources)(_Actor)
        shared_ref = ray.put(shared)  # shipped once; every actor reads it from the object store
        actors = [remote.remote(shared_ref) for _ in range(n_actors)]
        idle, queue, running, lost, done = list(actors), deque(tasks), {}, Counter(), 0
        try:
            while queue or running:
                while idle and queue:
                    actor, task = idle.pop(), queue.popleft()
                    running[actor.run.remote(task)] = (task, actor)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                token.raise_if_cancelled()
                for ref in ready:
                    task, actor = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except lost_worker as exc:
                        self._lost(task, actor, actors, lost, exc)
                        queue.appendleft(task)
                        if not actors:  # every worker gone: start another (it waits for room on the cluster)
                            actors.append(remote.remote(shared_ref))
                            idle.append(actors[-1])
                        continue
                    except exceptions.RayTaskError as exc:
                        raise _task_failure(task, exc) from None
                    store.write(task.name, *result)
                    done += 1
                    idle.append(actor)
                    yield Progress("shards", done, len(tasks), task.name)
        finally:
            for actor in actors:
                ray.kill(actor)
        store.notes.extend(self.notes)

    def _lost(self, task: ShardTask, actor, actors: list, lost: Counter, exc: BaseException) -> None:
        lost[task.name] += 1
        if actor in actors:
            actors.remove(actor)
        if lost[task.name] >= MAX_ATTEMPTS:
            raise CellSearchError(f"shard {task.name} lost its worker {lost[task.name]} times "
                                  f"({type(exc).__name__}); finished shards are kept, run the command again")
        self.notes.append(f"a worker died while running shard {task.name} ({type(exc).__name__}); "
                          "the shard ran again on another worker")


def _task_failure(task: ShardTask, exc: BaseException) -> CellSearchError:
    """A shard that failed inside a worker (missing weights, unreadable input): the worker's own message."""
    cause = getattr(exc, "cause", None) or exc
    detail = str(cause) if isinstance(cause, CellSearchError) else f"{type(cause).__name__}: {cause}"
    return CellSearchError(f"shard {task.name} failed on a Ray worker: {detail.strip().splitlines()[-1]} "
                           "(finished shards are kept; a re-run resumes)")
