"""Run the app under gunicorn, configured by the CLI rather than by a gunicorn config file.

Loading: per worker, not preloaded. Each worker calls `create_app` after the fork, so the model
and the intra-op thread pools of PyTorch / ONNX Runtime are created in the process that uses them
(OpenMP pools and ORT sessions are not fork-safe; a forked copy can hang or oversubscribe). A
model is tens of MB, so one copy per worker costs little; to fail fast anyway, the serve command
checks that the model exists before gunicorn starts.

Serving backend: ONNX Runtime on the ONNX form derived from the model's safetensors file (see
service.load_predictor), prepared before the workers fork, so that no worker imports torch.

Worker class: gthread with its requests read to the end in the worker's event loop first
(server/buffering.py), so that idle, slow or stalled clients hold a connection slot, not a thread.
Inference is CPU-bound, so one worker per core does the work, each with its share of intra-op
threads; a few threads per worker answer /health and queue for the worker's single inference slot
(see Service) while it is busy.
"""

from __future__ import annotations

import logging
import os

from face_emotion.server.config import RunOptions, ServerConfig

__all__ = ["RunOptions", "default_workers", "load_app", "run_dev", "run_gunicorn"]

log = logging.getLogger(__name__)


# Seconds a stopping worker may finish its requests (a gunicorn setting no one has needed to change).
GRACEFUL_TIMEOUT_S = 20
WORKER_CLASS = "face_emotion.server.buffering.BufferingWorker"
# Descriptors a worker may need beyond its connections (model files, pipes, logs).
SPARE_FDS = 128


def default_workers() -> int:
    """One worker per core available to this process (capped: each holds its own model)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def load_app(config: ServerConfig, *, warm_up: bool = True):
    """Create the app with its model for this process; used by each gunicorn worker and --dev."""
    from face_emotion.server import create_app

    app = create_app(config)
    if warm_up:
        app.extensions["face_emotion"].warm_up()
    return app


def prepare_model(config: ServerConfig) -> None:
    """Derive the ONNX form of the model (inference.onnx_cache.derive_onnx) once, before workers start.

    Done here, in a spawned child of the master (which never imports torch), so that workers find
    it cached instead of queueing on the export lock while gunicorn's boot timeout runs. A failure
    is only logged: each worker then reports it and serves with PyTorch.
    """
    from face_emotion.inference.loading import choose_backend
    from face_emotion.inference.onnx_cache import derive_onnx
    from face_emotion.models.files import ModelLoadError

    path, backend = choose_backend(config.model, config.backend)
    if backend != "onnxruntime" or path.suffix != ".safetensors":
        return
    try:
        derive_onnx(path)
    except ModelLoadError as error:
        log.warning("%s", error)


def hold_limits(config: ServerConfig, options: RunOptions):
    """What each worker enforces on slow and idle clients (server/buffering.py)."""
    from face_emotion.server.buffering import HoldLimits

    return HoldLimits(header_timeout_s=options.header_timeout_s, body_timeout_s=options.body_timeout_s,
                      max_connections=options.max_connections, max_buffer_bytes=options.max_buffer_bytes,
                      max_upload_bytes=config.max_upload_bytes, max_video_bytes=config.max_video_bytes)


def raise_fd_limit(needed: int) -> None:
    """Lift this process's soft limit on open files towards ``needed`` (workers inherit it): the
    usual soft limit of 1024 is below what a few workers' connection caps add up to."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit to %d: %s", wanted, error)


def run_gunicorn(config: ServerConfig, options: RunOptions) -> None:
    from gunicorn.app.base import BaseApplication
    from gunicorn.errors import AppImportError

    prepare_model(config)
    workers = options.workers or default_workers()
    # Each worker's connections, plus the refused ones it answers and drains, plus its own files.
    raise_fd_limit(workers * (2 * options.max_connections + SPARE_FDS) + SPARE_FDS)

    settings = {
        "bind": f"[{options.host}]:{options.port}" if ":" in options.host else f"{options.host}:{options.port}",
        "workers": workers,
        "worker_class": WORKER_CLASS,
        "threads": options.threads,
        "timeout": options.timeout_s,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": options.keepalive_s,
        "preload_app": False,
        "accesslog": "-" if options.access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "face-emotion",
        # Headers and request line bounded as gunicorn does by default; the body by the app.
        "limit_request_line": 8190,
    }

    limits = hold_limits(config, options)

    class FaceEmotionApplication(BaseApplication):
        hold_limits = limits  # read by each BufferingWorker (a worker holds the application object)

        def load_config(self):
            for key, value in settings.items():
                if value is not None:
                    self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 24 opens a control socket at one fixed path per user; two services
                # on one machine (or a test beside a running service) would fight over it.
                self.cfg.set("control_socket_disable", True)

        def load(self):
            from face_emotion.models.files import ModelLoadError

            try:
                return load_app(config)
            except (ModelLoadError, ImportError, ValueError) as error:
                # A missing model, detector library (DetectorUnavailableError is an ImportError) or
                # an unknown name. AppImportError: gunicorn prints the message and stops cleanly
                # instead of restarting workers that cannot boot.
                raise AppImportError(f"cannot start: {error}") from None

    FaceEmotionApplication(prog="face-emotion serve").run()


def run_dev(config: ServerConfig, options: RunOptions) -> None:
    """Flask's own development server: one process, threaded, no reloader."""
    app = load_app(config, warm_up=False)
    app.run(host=options.host, port=options.port, debug=False, threaded=True, use_reloader=False)
