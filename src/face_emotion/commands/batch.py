"""`face-emotion batch`: many images -> a Parquet dataset, one row per face, locally or on Ray.

Exit status: 0 when at least one image was analysed (or every image was done already), 1 when
every image failed or the inputs, output or model are unusable, 2 for usage errors.
"""

from __future__ import annotations

import click

from face_emotion.batch.engines import DEFAULT_BATCH_SIZE, ENGINES
from face_emotion.commands.common import fail as _fail
from face_emotion.inference.backends import backend_names


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True,
              help="Parquet dataset folder to write (local or a URI such as s3://bucket/faces/).")
@click.option("--engine", type=click.Choice(list(ENGINES)), default="local", show_default=True,
              help="local: this process; ray: Ray Data with an actor pool.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Ray actors, one Predictor each (default: as many as the cluster's CPUs hold).")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="CPUs Ray reserves for each actor (and its inference threads).")
@click.option("--address", help="Join a running Ray cluster: auto or HOST:PORT (default: start a local one).")
@click.option("--resume", is_flag=True, help="Skip the paths that the output already holds.")
@click.option("--model", "model_path", help="Run folder, .safetensors or .onnx file (default: the bundled model).")
@click.option("--detector", help="Face detector name (default: the package's default detector).")
@click.option("--no-detect", is_flag=True, help="Images are face crops already: each whole image is one face.")
@click.option("--backend", type=click.Choice(backend_names()),
              help="Inference backend (default: onnxruntime; pytorch runs the .safetensors file eagerly).")
@click.option("--tta", is_flag=True, help="Average each face's probabilities with its mirror image's.")
@click.option("--threads", type=click.IntRange(min=1),
              help="Inference threads per worker (default: all CPUs locally, --cpus-per-worker on Ray).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Images per batch handed to a worker.")
def batch(inputs, output, engine, workers, cpus_per_worker, address, resume, model_path, detector, no_detect,
          backend, tta, threads, batch_size) -> None:
    """Emotions of every face in INPUTS into a Parquet dataset (one row per face).

    INPUTS are image files, folders (searched recursively) and list files (.txt: one path a
    line; .csv or .parquet: a `path` column), as local paths or URIs that pyarrow reads
    (s3://, gs://, hdfs://). Faces are numbered from 1, largest first. An image without a face
    gets one row with empty face fields, an unreadable file one row with its `error_code` and
    `error`.
    """
    from face_emotion.batch import PredictorOptions, create_engine, run_batch
    from face_emotion.inference.predictor import WHOLE_IMAGE
    from face_emotion.inference.results import plural

    if no_detect and detector not in (None, WHOLE_IMAGE):
        _fail("--no-detect and --detector are alternatives: choose one")
    if engine == "local" and (workers is not None or address is not None):
        _fail("--workers and --address are for --engine ray")
    engine_options = ({"workers": workers, "address": address, "cpus_per_worker": cpus_per_worker}
                      if engine == "ray" else {})
    options = PredictorOptions(model=model_path, detector=WHOLE_IMAGE if no_detect else detector, backend=backend,
                               tta=tta, num_threads=threads)
    summary = run_batch(list(inputs), output, engine=create_engine(engine, **engine_options), options=options,
                        resume=resume, batch_size=batch_size)
    done_before = f", {summary.skipped} done before (skipped)" if summary.skipped else ""
    if summary.images == 0:
        click.echo(f"nothing to do: all {plural(summary.skipped, 'image')} are in {output} already", err=True)
        return
    click.echo(
        f"{plural(summary.images, 'image')}, {plural(summary.faces, 'face')}, {plural(summary.errors, 'error')}, "
        f"{summary.images_per_second:.1f} images/s{done_before}; rows in {output}",
        err=True,
    )
    if summary.errors == summary.images:
        raise click.exceptions.Exit(1)
