"""`face-emotion serve`."""

from __future__ import annotations

import os
from dataclasses import replace

import click

from face_emotion.commands.common import fail as _fail
from face_emotion.server.config import RunOptions, ServerConfig, check_buffer, check_deadlines


def _check_names(detector: str | None) -> None:
    from face_emotion.faces import available_detectors

    detectors = available_detectors()  # includes "none", the whole-image detector
    if detector is not None and detector not in detectors:
        _fail(f"unknown face detector {detector!r} ({ServerConfig.where('detector')}); choose one of: "
              f"{', '.join(detectors)}")


def _check_model(model: str | None, backend: str | None) -> None:
    """Fail before any worker starts when the model is missing or unreadable, or the backend unknown
    (the resolver every verb uses; reading a header starts no thread pool before the fork)."""
    from face_emotion.errors import UnknownNameError
    from face_emotion.inference.loading import choose_backend
    from face_emotion.models.store import read_spec

    try:
        path, _ = choose_backend(model, backend)
    except UnknownNameError as error:
        _fail(f"{error} ({ServerConfig.where('backend')})")
    if path.suffix == ".safetensors":
        read_spec(path)


# Options default to None ("not given"): defaults, variables and checks live in ServerConfig and
# RunOptions (server/config.py), which also write the defaults shown in the help texts.
S, R = ServerConfig, RunOptions


@click.command()
@click.option("--model", help=S.help("model", "Run folder, model file or .onnx file", "the bundled model"))
@click.option("--host", help=R.help("host", "Interface to listen on; 0.0.0.0 exposes the service to the network"))
@click.option("--port", type=int, help=R.help("port", "Port to listen on"))
@click.option("--workers", type=int, help=R.help("workers", "Worker processes, each with its own model",
                                                   "one per core; 1 with --dev"))
@click.option("--threads", type=int, help=R.help(
    "threads", "Connections each worker serves at once (predictions within a worker still run one at a time)"))
@click.option("--timeout", "timeout_s", type=int,
              help=R.help("timeout_s", "Seconds before a stuck worker is restarted"))
@click.option("--max-upload-mb", type=float, help=S.help("max_upload_mb", "Largest request body, MB"))
@click.option("--max-pixels", type=int, help=S.help("max_pixels", "Largest decoded image, width*height"))
@click.option("--max-batch", type=int, help=S.help("max_batch", "Most images per /predict/batch"))
@click.option("--cors-origins", help=S.help("cors_origins", "Comma-separated origins allowed to call the API "
                                                            "from a browser", "same origin only"))
@click.option("--detector", help=S.help("detector", "Face detector name", "the package's default detector"))
@click.option("--backend", help=S.help("backend", "Inference backend name", "onnxruntime"))
@click.option("--tta/--no-tta", default=None, help=S.help("tta", "Test-time augmentation (mirrored crops too)"))
@click.option("--inference-threads", type=int, help=S.help("inference_threads", "Intra-op threads per worker",
                                                           "cores / workers"))
@click.option("--inference-timeout", type=float, help=S.help(
    "inference_timeout_s",
    "Seconds a request may wait for its prediction before a JSON 503 'timeout'; below --timeout"))
@click.option("--header-timeout", "header_timeout_s", type=float, help=R.help(
    "header_timeout_s", "Seconds a client has to send a request's headers after connecting (else 408)"))
@click.option("--body-timeout", "body_timeout_s", type=float, help=R.help(
    "body_timeout_s", "Seconds a request body may pause (else 408); it must also average 1 kB/s"))
@click.option("--keepalive", "keepalive_s", type=int,
              help=R.help("keepalive_s", "Seconds an idle kept-alive connection is held"))
@click.option("--max-connections", type=int, help=R.help(
    "max_connections", "Open connections per worker, idle and slow ones included; past it a new one gets 503"))
@click.option("--access-log", is_flag=True, default=None,
              help=R.help("access_log", "Log every request (gunicorn's access log on stdout)"))
@click.option("--dev", is_flag=True,
              help="Flask's development server instead of gunicorn (one process; for debugging).")
def serve(model, host, port, workers, threads, timeout_s, max_upload_mb, max_pixels, max_batch, cors_origins,
          detector, backend, tta, inference_threads, inference_timeout, header_timeout_s, body_timeout_s,
          keepalive_s, max_connections, access_log, dev) -> None:
    """Serve the JSON API and the web page (gunicorn; --dev for Flask's own server)."""
    from face_emotion.server.runner import default_workers, run_dev, run_gunicorn

    options = RunOptions.from_env(host=host, port=port, workers=workers, threads=threads, timeout_s=timeout_s,
                                  header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
                                  keepalive_s=keepalive_s, max_connections=max_connections, access_log=access_log)
    options = replace(options, workers=options.workers or (1 if dev else default_workers()))
    config = ServerConfig.from_env(
        model=model, max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_batch=max_batch,
        cors_origins=cors_origins, detector=detector, backend=backend, tta=tta,
        inference_threads=inference_threads, inference_timeout_s=inference_timeout,
    )
    if not dev:
        check_deadlines(config, options)
        check_buffer(config, options)
    if inference_threads is None and ServerConfig.env_name("inference_threads") not in os.environ:
        # Split the cores between the workers instead of letting each grab all of them.
        config = replace(config, inference_threads=max(1, default_workers() // options.workers))
    _check_names(config.detector)
    _check_model(config.model, config.backend)

    host, port = options.host, options.port
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if dev:
        click.echo(f"face-emotion (Flask development server) on {where}", err=True)
        run_dev(config, options)
    else:
        click.echo(f"face-emotion on {where} ({options.workers} worker(s) x {options.threads} threads, "
                   f"{config.inference_threads} inference thread(s) each)", err=True)
        run_gunicorn(config, options)
