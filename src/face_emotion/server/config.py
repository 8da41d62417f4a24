"""Settings of the web service: one frozen dataclass, filled from flags or environment, validated once.

`create_app` never reads the environment itself; the `serve` command builds a :class:`ServerConfig`
with :meth:`ServerConfig.from_env` (flags override the environment) and hands it over, so a test or
an embedding program gets exactly the settings it passes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

ENV_PREFIX = "FACE_EMOTION_"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting has a value the service cannot run with; the message names the flag and variable."""


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false), not {text!r}")


@dataclass(frozen=True)
class ServerConfig:
    """What the Flask app needs to know. Sizes carry their unit in the name."""

    model: str | None = None  # run folder, model file or .onnx; None: the bundled default model
    backend: str | None = None  # inference backend name; None: the Predictor's choice
    detector: str | None = None  # face detector name; None: the Predictor's choice
    tta: bool = False  # test-time augmentation (slower, slightly better)
    max_upload_mb: float = 10.0  # request body limit, megabytes
    max_pixels: int = 40_000_000  # decoded width * height limit (decompression-bomb guard)
    max_batch: int = 16  # most images in one POST /predict/batch
    cors_origins: tuple[str, ...] = ()  # extra origins allowed to call the API; "*" for any
    inference_threads: int = 0  # intra-op threads of each worker's model; 0: leave the backend's default
    inference_concurrency: int = 1  # predictions run at once in one worker (more only oversubscribes cores)
    # A prediction not done this long after its request began is answered 503 {"code": "timeout"}.
    # Below gunicorn's worker timeout (--timeout, 60 s), which would kill the worker with no answer.
    inference_timeout_s: float = 30.0
    # POST /predict/video: the upload, the clip's length and frame size, checked before decoding.
    max_video_mb: float = 50.0
    max_video_s: float = 120.0
    max_video_pixels: int = 1920 * 1080
    video_sample_fps: float = 5.0  # frames analysed per second of clip unless the request asks otherwise
    # A clip's analysis holds its worker's inference slot; past this it is answered 503 "timeout".
    # gthread workers keep their heartbeat while a request thread works, so it may exceed --timeout.
    video_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        self.validate()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "ServerConfig":
        """From a dict of field names (lower case). Unknown names are an error, not silently ignored."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown server setting(s) {unknown}; known: {sorted(known)}")
        if "cors_origins" in values:
            values["cors_origins"] = _split_origins(values["cors_origins"])
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "ServerConfig":
        """Read FACE_EMOTION_* variables; keyword overrides (flags) that are not None win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = _env_name(f.name)
            if name not in environ:
                continue
            text = environ[name]
            values[f.name] = _convert(f, name, text)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- derived values -----------------------------------------------------------------
    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * 1024 * 1024)

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        if not 0 < float(self.max_upload_mb) <= 1024:
            raise ConfigError(
                f"max upload size must be above 0 and at most 1024 MB, not {self.max_upload_mb} "
                f"(--max-upload-mb / {_env_name('max_upload_mb')})"
            )
        if not 1 <= int(self.max_pixels) <= 1_000_000_000:
            raise ConfigError(
                f"max pixels must be between 1 and 1e9, not {self.max_pixels} "
                f"(--max-pixels / {_env_name('max_pixels')})"
            )
        if not 1 <= int(self.max_batch) <= 256:
            raise ConfigError(
                f"max batch must be between 1 and 256 images, not {self.max_batch} "
                f"(--max-batch / {_env_name('max_batch')})"
            )
        if not 0 <= int(self.inference_threads) <= 256:
            raise ConfigError(f"inference threads must be between 0 and 256, not {self.inference_threads} "
                              f"({_env_name('inference_threads')})")
        if not 1 <= int(self.inference_concurrency) <= 64:
            raise ConfigError(f"inference concurrency must be between 1 and 64, not {self.inference_concurrency} "
                              f"({_env_name('inference_concurrency')})")
        if not 0 < float(self.inference_timeout_s) <= 3600:
            raise ConfigError(
                f"inference timeout must be above 0 and at most 3600 seconds, not {self.inference_timeout_s} "
                f"(--inference-timeout / {_env_name('inference_timeout_s')})"
            )
        for name, low, high in (("max_video_mb", 0, 4096), ("max_video_s", 0, 24 * 3600),
                                ("max_video_pixels", 0, 100_000_000), ("video_sample_fps", 0, 240),
                                ("video_timeout_s", 0, 24 * 3600)):
            if not low < float(getattr(self, name)) <= high:
                raise ConfigError(f"{name} must be above {low} and at most {high}, not {getattr(self, name)} "
                                  f"({_env_name(name)})")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ConfigError(
                    f"CORS origin {origin!r} is not of the form https://host[:port] (or *) "
                    f"(--cors-origins / {_env_name('cors_origins')}, comma-separated)"
                )


def _split_origins(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(o.strip().rstrip("/") for o in value if o and o.strip())


def _convert(f: dataclasses.Field, name: str, text: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
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
