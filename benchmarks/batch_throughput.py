"""Images per second of `face-emotion batch`: local engine, Ray with 1 actor, Ray with 2 actors.

    python benchmarks/batch_throughput.py FOLDER [--copies 2] [--rounds 2] [--model M] [--batch-size 16]

FOLDER's images are linked ``--copies`` times into a temporary folder (distinct paths, the same
pixels), so a small folder still gives a run long enough to measure. The three engines run in
one process, in turn, for ``--rounds`` rounds; each engine's median is reported, and the ratios
between medians: shared machines are noisy, and only figures measured side by side compare.

Two rates per run: end to end (what the summary line says: for Ray, actors starting and loading
their Predictor included) and working (images over the span from the first batch started to the
last batch done, stamped by the workers themselves), the rate a long job approaches. Timing
results as they reach the driver does not work for Ray: they arrive in bursts; nor does the
difference of a short and a long run: actor start-up varies by more than the difference here.
Ray itself is started once (ray.init, timed on its own) and shared by the Ray runs.

Before the runs, one pass over the images in this process says where the time goes: read
(bytes from disk), decode (bytes -> upright RGB), detect (face detector, and the crops), model
(the eval transform, the backend, softmax), and write (rows -> a Parquet part).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def link_copies(folder: Path, copies: int, into: Path) -> list[str]:
    from face_emotion.batch import expand_inputs

    paths = []
    for original in expand_inputs([str(folder)]):
        for copy in range(copies):
            target = into / f"copy{copy}" / Path(original).relative_to(folder.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(original)
            paths.append(str(target))
    return paths


def stage_times(paths: list[str], options) -> dict[str, float]:
    """Seconds per stage over ``paths``, in this process, one image at a time."""
    import pyarrow.parquet as pq

    from face_emotion.batch.rows import output_schema, results_table
    from face_emotion.imageio import decode_image
    from face_emotion.inference.backends import softmax
    from face_emotion.inference.results import ImageResult

    predictor = options.load()
    totals = dict.fromkeys(("read", "decode", "detect", "model", "write"), 0.0)
    outcomes = []
    for path in paths:
        started = time.perf_counter()
        data = Path(path).read_bytes()
        read = time.perf_counter()
        try:
            image = decode_image(data)
        except ValueError:
            continue
        decoded = time.perf_counter()
        faces = predictor.faces(image)
        detected = time.perf_counter()
        if faces:
            # The tail of Predictor.predict, timed on its own.
            logits = predictor.backend.run(predictor.batch([face.crop for face in faces]))
            softmax(logits, predictor.spec.temperature)
        finished = time.perf_counter()
        totals["read"] += read - started
        totals["decode"] += decoded - read
        totals["detect"] += detected - decoded
        totals["model"] += finished - detected
        outcomes.append(ImageResult.of(image, predictor.predict(image), path=path))
    table = results_table(outcomes, output_schema(predictor.classes))
    with tempfile.TemporaryDirectory() as scratch:
        pq.write_table(table, f"{scratch}/warm-up.parquet")  # the first write loads Parquet's code
        started = time.perf_counter()
        table = results_table(outcomes, output_schema(predictor.classes))
        pq.write_table(table, f"{scratch}/part.parquet")
        totals["write"] = time.perf_counter() - started
    return totals


def timed_actor_class():
    """The Ray engine's actor, stamping each batch with when it started and ended (wall clock)."""
    import pyarrow as pa

    from face_emotion.batch.engines import RayEngine

    class TimedActor(RayEngine.actor_class):
        def __call__(self, batch):
            started = time.time()
            table = super().__call__(batch)
            rows = table.num_rows
            return (table.append_column("_started", pa.array([started] * rows, pa.float64()))
                    .append_column("_finished", pa.array([time.time()] * rows, pa.float64())))

    return TimedActor


def timed_run(paths: list[str], engine, options, batch_size: int, out: Path) -> dict[str, float]:
    """End-to-end seconds of run_batch, and the span in which the engine's workers were analysing
    (first batch started to last batch done): the rate a long job approaches, without the fixed
    costs of starting Ray's actors and loading their Predictors."""
    from face_emotion.batch import run_batch

    spans: list[float] = []

    class Timed:
        name, shows_progress = engine.name, True

        def run(self, todo, job, predictor):
            started = time.time()
            for table in engine.run(todo, job, predictor):
                if "_started" in table.column_names:
                    spans.extend([min(table.column("_started").to_pylist()),
                                  max(table.column("_finished").to_pylist())])
                    table = table.drop_columns(["_started", "_finished"])
                yield table
            if not spans:  # in-process: the workers' span is the whole run of the engine
                spans.extend([started, time.time()])

    started = time.perf_counter()
    summary = run_batch(paths, str(out), engine=Timed(), options=options, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - started
    assert summary.images == len(paths)
    return {"seconds": seconds, "end_to_end": len(paths) / seconds, "working": len(paths) / (max(spans) - min(spans))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--copies", type=int, default=2, help="link each image this many times")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each engine, in turn")
    parser.add_argument("--model", help="model to run (default: the bundled model)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    import ray

    from face_emotion.batch import PredictorOptions, create_engine
    from face_emotion.inference.backends import available_cpus

    cpus = available_cpus()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        paths = link_copies(args.folder, args.copies, scratch / "images")
        print(f"{len(paths)} images ({args.copies} links to each of {len(paths) // args.copies} in {args.folder}); "
              f"{cpus} CPUs; batch size {args.batch_size}", flush=True)

        stages = stage_times(paths[: len(paths) // args.copies], PredictorOptions(model=args.model, num_threads=1))
        analysed = len(paths) // args.copies
        total = sum(stages.values())
        print(f"\nwhere the time goes (one thread, {analysed} images, ms per image):")
        for stage, seconds in stages.items():
            print(f"  {stage:<7} {1000 * seconds / analysed:8.1f}  {100 * seconds / total:5.1f} %")

        engines = {"local": create_engine("local"), "ray x1": create_engine("ray", workers=1),
                   "ray x2": create_engine("ray", workers=2)}
        for name in ("ray x1", "ray x2"):
            engines[name].actor_class = timed_actor_class()
        options = PredictorOptions(model=args.model)  # as `batch` runs by default
        runs: dict[str, list[dict]] = {name: [] for name in engines}
        started = time.perf_counter()
        # As `batch` starts its own Ray: workers at this process's priority (see engines.py).
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - started
        try:
            for round_number in range(args.rounds):
                for name, engine in engines.items():
                    out = scratch / f"{name.replace(' ', '')}-{round_number}"
                    runs[name].append(timed_run(paths, engine, options, args.batch_size, out))
                    r = runs[name][-1]
                    print(f"  round {round_number + 1} {name}: {r['seconds']:.1f} s, "
                          f"{r['end_to_end']:.2f} img/s end to end, {r['working']:.2f} img/s working", flush=True)
        finally:
            ray.shutdown()
        results = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}

    print(f"\nray.init: {ray_start:.1f} s (once, not in the figures below); medians of {args.rounds} rounds")
    print(f"{'engine':<8} {'seconds':>8} {'end-to-end img/s':>17} {'working img/s':>14} {'working vs local':>17}")
    base = results["local"]["working"]
    for name, r in results.items():
        print(f"{name:<8} {r['seconds']:8.1f} {r['end_to_end']:17.2f} {r['working']:14.2f} "
              f"{r['working'] / base:16.2f}x")
    two_over_one = results["ray x2"]["working"] / results["ray x1"]["working"]
    print(f"ray x2 / ray x1 (working): {two_over_one:.2f}x")
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
