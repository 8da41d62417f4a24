"""`face-emotion serve`."""

from __future__ import annotations

import os

import click

from face_emotion.commands.common import fail as _fail


def _check_names(detector: str | None, backend: str | None) -> None:
    from face_emotion.faces import available_detectors
    from face_emotion.inference.backends import backend_names

    detectors = available_detectors()  # includes "none", the whole-image detector
    if detector is not None and detector not in detectors:
        _fail(f"unknown face detector {detector!r} (--detector / FACE_EMOTION_DETECTOR); choose one of: "
              f"{', '.join(detectors)}")
    if backend is not None and backend not in backend_names():
        _fail(f"unknown backend {backend!r} (--backend / FACE_EMOTION_BACKEND); choose one of: "
              f"{', '.join(backend_names())}")


def _check_model(model: str | None) -> None:
    """Fail before any worker starts when the model is missing or unreadable."""
    from face_emotion.inference.backends import BACKENDS, check_model_suffix
    from face_emotion.models.bundled import resolve_model_argument
    from face_emotion.models.store import ModelLoadError, read_spec, resolve_model_path

    try:
        path = resolve_model_path(resolve_model_argument(model), tuple(BACKENDS))
        check_model_suffix(path)  # a .pt/.ckpt pickle is refused here, not in each worker
        if path.suffix == ".safetensors":
            read_spec(path)  # the header only: cheap, and it starts no thread pool before the fork
    except ModelLoadError as error:
        _fail(str(error))


@click.command()
@click.option("--model",
              help="Run folder, model file or .onnx file (default: the bundled model). Env FACE_EMOTION_MODEL.")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="FACE_EMOTION_HOST",
              help="Interface to listen on; 0.0.0.0 exposes the service to the network.")
@click.option("--port", default=5000, show_default=True, envvar="FACE_EMOTION_PORT", type=click.IntRange(1, 65535))
@click.option("--workers", type=click.IntRange(1, 64), envvar="FACE_EMOTION_WORKERS",
              help="Worker processes, each with its own model [default: one per core].")
@click.option("--threads", default=4, show_default=True, envvar="FACE_EMOTION_THREADS", type=click.IntRange(1, 64),
              help="Connections each worker serves at once (predictions within a worker still run one at a time).")
@click.option("--timeout", "timeout_s", default=60, show_default=True, envvar="FACE_EMOTION_TIMEOUT",
              type=click.IntRange(5, 3600), help="Seconds before a stuck worker is restarted.")
@click.option("--max-upload-mb", type=float, help="Largest request body [default: 10]. Env FACE_EMOTION_MAX_UPLOAD_MB.")
@click.option("--max-pixels", type=int,
              help="Largest decoded image, width*height [default: 40e6]. Env FACE_EMOTION_MAX_PIXELS.")
@click.option("--max-batch", type=int, help="Most images per /predict/batch [default: 16]. Env FACE_EMOTION_MAX_BATCH.")
@click.option("--cors-origins", help="Comma-separated origins allowed to call the API from a browser "
                                     "(default: same origin only). Env FACE_EMOTION_CORS_ORIGINS.")
@click.option("--detector", help="Face detector name (default: the Predictor's). Env FACE_EMOTION_DETECTOR.")
@click.option("--backend", help="Inference backend name (default: from the model file). Env FACE_EMOTION_BACKEND.")
@click.option("--tta/--no-tta", default=None, help="Test-time augmentation. Env FACE_EMOTION_TTA.")
@click.option("--inference-threads", type=int,
              help="Intra-op threads per worker [default: cores / workers]. Env FACE_EMOTION_INFERENCE_THREADS.")
@click.option("--inference-timeout", type=float,
              help="Seconds a request may wait for its prediction before a JSON 503 'timeout' [default: 30]; "
                   "below --timeout. Env FACE_EMOTION_INFERENCE_TIMEOUT_S.")
@click.option("--access-log", is_flag=True, help="Log every request (gunicorn's access log on stdout).")
@click.option("--dev", is_flag=True,
              help="Flask's development server instead of gunicorn (one process; for debugging).")
def serve(model, host, port, workers, threads, timeout_s, max_upload_mb, max_pixels, max_batch, cors_origins,
          detector, backend, tta, inference_threads, inference_timeout, access_log, dev) -> None:
    """Serve the JSON API and the web page (gunicorn; --dev for Flask's own server)."""
    from face_emotion.server.config import ConfigError, ServerConfig
    from face_emotion.server.runner import RunOptions, default_workers, run_dev, run_gunicorn

    workers = workers or (1 if dev else default_workers())
    try:
        config = ServerConfig.from_env(
            model=model, max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_batch=max_batch,
            cors_origins=cors_origins, detector=detector, backend=backend, tta=tta,
            inference_threads=inference_threads, inference_timeout_s=inference_timeout,
        )
    except ConfigError as error:
        _fail(str(error))
    if not dev and config.inference_timeout_s >= timeout_s:
        # gunicorn kills a worker silent for --timeout seconds: the JSON deadline must come first.
        _fail(f"the inference timeout ({config.inference_timeout_s:g} s, --inference-timeout / "
              f"FACE_EMOTION_INFERENCE_TIMEOUT_S) must be below the worker timeout ({timeout_s} s, --timeout)")
    if not config.inference_threads and "FACE_EMOTION_INFERENCE_THREADS" not in os.environ:
        # Split the cores between the workers instead of letting each grab all of them.
        cores = default_workers()
        config = config.__class__.from_mapping({**config.to_dict(), "inference_threads": max(1, cores // workers)})
    _check_names(config.detector, config.backend)
    _check_model(config.model)

    options = RunOptions(host=host, port=port, workers=workers, threads=threads, timeout_s=timeout_s,
                         access_log=access_log)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if dev:
        click.echo(f"face-emotion (Flask development server) on {where}", err=True)
        run_dev(config, options)
    else:
        click.echo(f"face-emotion on {where} ({workers} worker(s) x {threads} threads, "
                   f"{config.inference_threads} inference thread(s) each)", err=True)
        run_gunicorn(config, options)
