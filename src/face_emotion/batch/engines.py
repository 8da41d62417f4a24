"""Engines run the shared batching code (face_emotion.batch.rows) over a list of paths.

An engine is a small class with a ``name`` and ``run(paths, job, predictor)`` yielding Arrow
tables of output rows, in any order; register a new one in ENGINES. ``local`` runs in this
process. ``ray`` runs on Ray Data: a map stage reads the bytes (Ray fuses it into the actors'
stage where it can), and an actor pool with one Predictor per actor (loaded once) analyses them,
on a local Ray instance or on a running cluster.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import pyarrow as pa

from face_emotion.batch.rows import analyse_read, read_paths
from face_emotion.errors import FaceEmotionError, UnknownNameError

if TYPE_CHECKING:
    from face_emotion.inference.predictor import Predictor


@dataclass(frozen=True)
class PredictorOptions:
    """Everything a worker needs to build its own Predictor (picklable, sent to Ray actors)."""

    model: str | None = None  # None: the bundled model (inside the package on every node)
    detector: str | None = None
    backend: str | None = None
    tta: bool = False
    num_threads: int | None = None

    def load(self) -> "Predictor":
        """The Predictor every engine's workers use; ``num_threads`` also bounds the detector's pool."""
        from face_emotion.inference.predictor import Predictor

        return Predictor.load(self.model, detector=self.detector, backend=self.backend, tta=self.tta,
                              num_threads=self.num_threads)


# Images per call of the analysing stage: large enough that a call's overhead (an Arrow table, a
# Ray task) is small beside its work, small enough that progress moves on a small job.
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class BatchJob:
    options: PredictorOptions
    schema: pa.Schema  # output rows, without metadata
    batch_size: int = DEFAULT_BATCH_SIZE  # images per call of the analysing stage


class BatchEngine(Protocol):
    name: str
    shows_progress: bool  # the engine draws its own progress bar (run_batch draws one otherwise)

    def run(self, paths: Sequence[str], job: BatchJob, predictor: "Predictor") -> Iterator[pa.Table]:
        """Output rows for every path, each image's rows within one table. ``predictor`` is the
        one the caller loaded; an engine that analyses in another process builds its own."""
        ...


class EngineError(FaceEmotionError, RuntimeError):
    """An engine could not start (a Ray instance, a cluster connection); the message says what to do."""

    code = "engine_unavailable"


def _path_table(paths: Sequence[str]) -> pa.Table:
    return pa.table({"path": pa.array(list(paths), pa.string())})


class LocalEngine:
    """The batching code in this process, one batch after another: no Ray needed."""

    name = "local"
    shows_progress = False

    def run(self, paths, job, predictor):
        for start in range(0, len(paths), job.batch_size):
            chunk = _path_table(paths[start:start + job.batch_size])
            yield analyse_read(predictor, read_paths(chunk), job.schema)


class _PredictActor:
    """A Ray Data actor: one Predictor, loaded once, for every batch the actor is given."""

    def __init__(self, job: BatchJob) -> None:
        self.job = job
        self.predictor = job.options.load()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return analyse_read(self.predictor, batch, self.job.schema)


class RayEngine:
    """Ray Data: ``workers`` actors of ``cpus_per_worker`` CPUs each (default: as many as the
    cluster's CPUs hold). ``address`` None starts a local Ray instance that ends with the run
    (or uses the one this process has already started); "auto" or "HOST:PORT" joins a cluster."""

    name = "ray"
    shows_progress = False  # Ray Data's own bars and progress logs are off (see _quiet_ray_data)
    actor_class = _PredictActor  # what each actor runs; a subclass may add to it (benchmarks time it)

    def __init__(self, *, workers: int | None = None, address: str | None = None, cpus_per_worker: float = 1.0) -> None:
        self.workers = workers
        self.address = address
        self.cpus_per_worker = cpus_per_worker

    def run(self, paths, job, predictor):
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            if self.address is None:
                _start_local_ray(ray)
            else:
                ray.init(address=self.address)
        try:
            yield from self._run(ray, paths, job)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray, paths, job):
        _quiet_ray_data()
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))
        # The worker's math libraries get the CPUs Ray grants the actor, unless told otherwise.
        options = job.options
        if options.num_threads is None:
            options = replace(options, num_threads=max(1, int(self.cpus_per_worker)))
        job = replace(job, options=options)
        # Enough blocks to keep every actor busy and the driver's memory small, few enough that
        # scheduling a block costs little next to analysing it.
        blocks = max(1, min(math.ceil(len(paths) / job.batch_size), 4 * workers * 64))
        dataset = (
            ray.data.from_arrow(_path_table(paths), override_num_blocks=blocks)
            .map_batches(read_paths, batch_size=job.batch_size, batch_format="pyarrow")
            .map_batches(
                self.actor_class,
                fn_constructor_kwargs={"job": job},
                compute=ray.data.ActorPoolStrategy(size=workers),
                batch_size=job.batch_size,
                batch_format="pyarrow",
                num_cpus=self.cpus_per_worker,
            )
        )
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")


# Environment for the Ray processes a local instance starts (a value the user set wins):
# - RAY_worker_niceness 0: Ray lowers its workers' priority by 15 (nice) by default, to keep a
#   cluster's drivers responsive. On a machine shared with other work that starved the actors:
#   one actor took 777 s for what the local engine did in 45 s.
# - RAY_BACKEND_LOG_LEVEL fatal: Ray's C++ core printed a core_worker.cc "error" line about the
#   actors' constructor arguments on every run, a normal condition for Ray Data's actor pools.
_LOCAL_RAY_ENV = {"RAY_worker_niceness": "0", "RAY_BACKEND_LOG_LEVEL": "fatal"}


def _quiet_ray_data() -> None:
    """A batch job prints its own one-line summary (and a bar on a terminal); Ray Data's progress
    logs, execution plans and bars (about 15 lines for a 12-image job) are for Ray's own tools."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # also its notice that bars are off


def _start_local_ray(ray) -> None:
    """A Ray instance for this command alone, its workers at the command's own priority, and quiet:
    Ray's own INFO and WARNING lines (a token notice, where its logs are) are not the user's business
    on a local run; errors still show."""
    import logging

    previous = {key: os.environ.get(key) for key in _LOCAL_RAY_ENV}
    for key, value in _LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    # Ray's C++ side writes to file descriptor 2 while it starts (the log level it read, a token
    # notice): kept aside, and shown only if the start fails.
    captured = tempfile.TemporaryFile(mode="w+b")
    saved = os.dup(2)
    try:
        os.dup2(captured.fileno(), 2)
        try:
            ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        finally:
            os.dup2(saved, 2)
    except Exception as error:  # Ray raises a bare Exception when its processes start too slowly
        captured.seek(0)
        said = captured.read().decode(errors="replace").strip().splitlines()[-3:]
        raise EngineError(
            f"could not start a local Ray instance ({error}{'; ' + ' / '.join(said) if said else ''}); on a busy "
            "machine try again, or start one with `ray start --head` and pass --address auto"
        ) from error
    finally:  # Ray's processes have read them; the rest of this process is left as it was
        os.close(saved)
        captured.close()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)


ENGINES: dict[str, type] = {"local": LocalEngine, "ray": RayEngine}


def create_engine(name: str, **options) -> BatchEngine:
    try:
        engine = ENGINES[name]
    except KeyError:
        raise UnknownNameError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None
    return engine(**options)
