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


class UnreadableFileError(FaceEmotionError):
    """A file that the operating system would not hand over (missing, permissions, a folder)."""

    code = "unreadable_file"

    @classmethod
    def of(cls, error: OSError | None = None) -> "UnreadableFileError":
        """The one wording of this error, for every verb that reads user files."""
        reason = "" if error is None else f": {error.strerror or error}"
        return cls(f"cannot read file{reason}")
