"""Settings of the web service: frozen dataclasses, filled from flags or environment, validated once.

:class:`ServerConfig` is what the app needs; :class:`RunOptions` how `serve` runs it. Each field's
default, environment variable and check live here only. `create_app` never reads the environment
itself; the `serve` command builds both with ``from_env`` (flags override the environment) and
hands them over, so a test or an embedding program gets exactly the settings it passes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from face_emotion.errors import FaceEmotionError
from face_emotion.imageio import DEFAULT_MAX_PIXELS

ENV_PREFIX = "FACE_EMOTION_"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
# The words of a yes/no setting: FACE_EMOTION_* variables (any case, "" is no) and the API's query
# flags (exactly these; the OpenAPI document lists them) read the same two sets.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigError(FaceEmotionError, ValueError):
    """A setting has a value the service cannot run with; the message names the flag and variable."""

    code = "bad_config"


def _parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS or value == "":
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false), not {text!r}")


def setting(default: Any, *, flag: str | None = "", env: str = "") -> Any:
    """A settings field. ``flag``: its `serve` option ("" = --field-name, None = environment only);
    ``env``: its variable ("" = FACE_EMOTION_FIELD_NAME)."""
    return dataclasses.field(default=default, metadata={"flag": flag, "env": env})


class _Settings:
    """Shared by the settings dataclasses: the one home of each default, variable and check.

    The `serve` command's options default to None ("not given") and take their help text's
    default from here, so nothing is written twice.
    """

    @classmethod
    def _field(cls, name: str) -> dataclasses.Field:
        return {f.name: f for f in dataclasses.fields(cls)}[name]

    @classmethod
    def env_name(cls, name: str) -> str:
        return cls._field(name).metadata.get("env") or ENV_PREFIX + name.upper()

    @classmethod
    def flag_name(cls, name: str) -> str | None:
        flag = cls._field(name).metadata.get("flag", "")
        return "--" + name.replace("_", "-") if flag == "" else flag

    @classmethod
    def where(cls, name: str) -> str:
        """How a user sets ``name``: "--flag / FACE_EMOTION_VAR" (for error messages)."""
        flag = cls.flag_name(name)
        return f"{flag} / {cls.env_name(name)}" if flag else cls.env_name(name)

    @classmethod
    def help(cls, name: str, text: str, default: str | None = None) -> str:
        """An option's help: ``text``, the dataclass default (or ``default`` words), the variable."""
        value = cls._field(name).default
        if default is not None:
            shown = default
        elif isinstance(value, bool):
            shown = "on" if value else "off"
        else:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{text} [default: {shown}]. Env {cls.env_name(name)}."

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None):
        """From a dict of field names (lower case). Unknown names are an error, not silently ignored."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} setting(s) {unknown}; known: {sorted(known)}")
        if "cors_origins" in values:
            values["cors_origins"] = _split_origins(values["cors_origins"])
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any):
        """Read the FACE_EMOTION_* variables; keyword overrides (flags) that are not None win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = cls.env_name(f.name)
            if name in environ:
                values[f.name] = _convert(f, name, environ[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _check_range(self, name: str, low: float, high: float, what: str, *, above: bool = False) -> None:
        value = getattr(self, name)
        ok = (low < float(value) if above else low <= float(value)) and float(value) <= high
        if not ok:  # (nan fails both comparisons)
            bound = f"above {low:g} and at most {high:g}" if above else f"between {low:g} and {high:g}"
            raise ConfigError(f"{what} must be {bound}, not {value} ({self.where(name)})")


# Upper bounds of the video settings (each must also be above 0).
VIDEO_LIMITS = {"max_video_mb": 4096, "max_video_s": 24 * 3600, "max_video_pixels": 100_000_000,
                "video_sample_fps": 240, "video_timeout_s": 24 * 3600}


@dataclass(frozen=True)
class ServerConfig(_Settings):
    """What the Flask app needs to know. Sizes carry their unit in the name."""

    model: str | None = setting(None)  # run folder, model file or .onnx; None: the bundled default model
    backend: str | None = setting(None)  # inference backend name; None: the Predictor's choice
    detector: str | None = setting(None)  # face detector name; None: the Predictor's choice
    tta: bool = setting(False)  # test-time augmentation (slower, slightly better)
    max_upload_mb: float = setting(10.0)  # request body limit, megabytes
    max_pixels: int = setting(DEFAULT_MAX_PIXELS)  # decoded width * height limit (decompression-bomb guard)
    max_batch: int = setting(16)  # most images in one POST /predict/batch
    cors_origins: tuple[str, ...] = setting(())  # extra origins allowed to call the API; "*" for any
    # Intra-op threads of each worker's model; 0: leave the backend's default. `serve` splits the
    # cores between its workers when this is not given.
    inference_threads: int = setting(0)
    # Predictions run at once in one worker (more only oversubscribes cores).
    inference_concurrency: int = setting(1, flag=None)
    # A prediction not done this long after its request began is answered 503 {"code": "timeout"}.
    # Below gunicorn's worker timeout (RunOptions.timeout_s), which would kill the worker with no answer.
    inference_timeout_s: float = setting(30.0, flag="--inference-timeout")
    # POST /predict/video: the upload, the clip's length and frame size, checked before decoding.
    max_video_mb: float = setting(50.0, flag=None)
    max_video_s: float = setting(120.0, flag=None)
    max_video_pixels: int = setting(1920 * 1080, flag=None)
    # Frames analysed per second of clip unless the request asks otherwise.
    video_sample_fps: float = setting(5.0, flag=None)
    # A clip's analysis holds its worker's inference slot; past this it is answered 503 "timeout".
    # gthread workers keep their heartbeat while a request thread works, so it may exceed --timeout.
    video_timeout_s: float = setting(90.0, flag=None)

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived values -----------------------------------------------------------------
    def page_video_settings(self) -> dict[str, float]:
        """The video and tracking defaults the page's scripts use (static/tracking.js
        pageSettings), so they keep no copies: the server's sample rate, and the clip path's
        smoothing, lost-track and forget times."""
        from face_emotion.video.smoothing import DEFAULT_FORGET_AFTER_S, DEFAULT_SMOOTH_S
        from face_emotion.video.tracking import DEFAULT_LOST_TRACK_S

        return {"sample_fps": self.video_sample_fps, "smooth_s": DEFAULT_SMOOTH_S,
                "lost_track_s": DEFAULT_LOST_TRACK_S, "forget_after_s": DEFAULT_FORGET_AFTER_S}

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * 1024 * 1024)

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        self._check_range("max_upload_mb", 0, 1024, "max upload size (MB)", above=True)
        self._check_range("max_pixels", 1, 1_000_000_000, "max pixels")
        self._check_range("max_batch", 1, 256, "max batch (images)")
        self._check_range("inference_threads", 0, 256, "inference threads")
        self._check_range("inference_concurrency", 1, 64, "inference concurrency")
        self._check_range("inference_timeout_s", 0, 3600, "inference timeout (seconds)", above=True)
        for name in ("max_video_mb", "max_video_s", "max_video_pixels", "video_sample_fps", "video_timeout_s"):
            self._check_range(name, 0, VIDEO_LIMITS[name], name.replace("_", " "), above=True)
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ConfigError(
                    f"CORS origin {origin!r} is not of the form https://host[:port] (or *) "
                    f"({self.where('cors_origins')}, comma-separated)"
                )


@dataclass(frozen=True)
class RunOptions(_Settings):
    """How `serve` runs the app: the HTTP server's own settings (gunicorn, or Flask's with --dev)."""

    host: str = setting("127.0.0.1")
    port: int = setting(5000)
    workers: int | None = setting(None)  # processes, each with its own model; None: one per core (1 with --dev)
    threads: int = setting(4)  # connections each worker serves at once = workers * threads in all
    timeout_s: int = setting(60, flag="--timeout", env=ENV_PREFIX + "TIMEOUT")  # a worker silent longer is replaced
    access_log: bool = setting(False)
    # Slow and idle clients: each worker reads a request to its end before a thread sees it
    # (server/buffering.py), and answers 408 to one whose headers take longer than
    # header_timeout_s from its connection, or whose body pauses for body_timeout_s.
    header_timeout_s: float = setting(10.0, flag="--header-timeout")
    body_timeout_s: float = setting(10.0, flag="--body-timeout")
    keepalive_s: int = setting(5, flag="--keepalive")  # an idle kept-alive connection is closed after this; 0: none
    # Open connections per worker (arriving, waiting, answered, kept alive); past it a new one gets 503.
    max_connections: int = setting(256)
    # Per worker: bytes of unfinished uploads held in memory; an upload past it gets 503.
    max_buffer_mb: float = setting(200.0, flag=None)

    def __post_init__(self) -> None:
        self._check_range("port", 1, 65535, "port")
        if self.workers is not None:
            self._check_range("workers", 1, 64, "workers")
        self._check_range("threads", 1, 64, "threads per worker")
        self._check_range("timeout_s", 5, 3600, "worker timeout (seconds)")
        self._check_range("header_timeout_s", 0, 3600, "header timeout (seconds)", above=True)
        self._check_range("body_timeout_s", 0, 3600, "body timeout (seconds)", above=True)
        self._check_range("keepalive_s", 0, 3600, "keep-alive (seconds)")
        self._check_range("max_connections", 1, 100_000, "connections per worker")
        self._check_range("max_buffer_mb", 0, 65536, "upload buffer (MB)", above=True)

    @property
    def max_buffer_bytes(self) -> int:
        return int(self.max_buffer_mb * 1024 * 1024)


def check_deadlines(config: ServerConfig, options: RunOptions) -> None:
    """gunicorn kills a worker silent for its timeout without an answer: the JSON deadline must come first."""
    if config.inference_timeout_s >= options.timeout_s:
        raise ConfigError(
            f"the inference timeout ({config.inference_timeout_s:g} s, {config.where('inference_timeout_s')}) "
            f"must be below the worker timeout ({options.timeout_s} s, {options.where('timeout_s')})"
        )


def check_buffer(config: ServerConfig, options: RunOptions) -> None:
    """A worker must be able to hold the largest upload it accepts, or that upload never gets in."""
    largest = max(config.max_upload_mb, config.max_video_mb)
    if options.max_buffer_mb < largest:
        raise ConfigError(
            f"the upload buffer ({options.max_buffer_mb:g} MB, {options.where('max_buffer_mb')}) must hold the "
            f"largest upload ({largest:g} MB, {config.where('max_upload_mb')} / {config.where('max_video_mb')})"
        )


def _split_origins(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(o.strip().rstrip("/") for o in value if o and o.strip())


def _convert(f: dataclasses.Field, name: str, text: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    kind = kind.replace("| None", "").strip()
    if kind == "bool":
        return _parse_bool(name, text)
    try:
        if kind == "int":
            return int(text.strip())
        if kind == "float":
            return float(text.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {text!r}") from None
    if kind.startswith("tuple"):
        return _split_origins(text)
    return text.strip() or None
