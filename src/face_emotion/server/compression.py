"""gzip for the page's files, as a static file server sends them.

onnxruntime-web's wasm is 14 MB as it is and under 4 MB gzipped; the page's scripts shrink by
two thirds. A file is compressed once per process and kept in memory (a ``.gz`` beside it, as a
build or `export --format web` writes them, or one in the cache folder is used instead when it
holds the same bytes); a client that does not send
``Accept-Encoding: gzip`` gets the bytes as they are. Every response of a file that has a gzip
form says ``Vary: Accept-Encoding``, and each form has its own ETag, so a cache never hands one
client the other's bytes.

brotli would take the wasm further (2.8 MB at quality 5, as fast as gzip; 2.4 MB at 11, which
takes over a minute) and browsers offer it on loopback and HTTPS, but Python's standard library
has none: it would be a new dependency (the ``brotli`` wheel).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Request, Response, abort, current_app, request, send_file
from werkzeug.security import safe_join

from face_emotion.cache import cache_path

GZIP_LEVEL = 9  # once per file and process, so the few percent over level 6 are worth their second
# Worth compressing: text, JavaScript, JSON, WebAssembly, SVG and ONNX weights (application/octet-stream).
_COMPRESSIBLE_PREFIXES = ("text/", "application/javascript", "application/json", "application/wasm",
                          "image/svg+xml", "application/octet-stream", "application/manifest+json")
MIN_BYTES = 1024  # below this the headers cost about what gzip saves
DISK_CACHE_MIN_BYTES = 1_000_000
_WORTH = 0.95  # keep a gzip form only when it saves at least 5 %
# The page's own files may change with the installed package (their URLs are not content-addressed):
# a browser keeps them but asks again (ETag), which costs a 304 per file.
STATIC_CACHE_CONTROL = "no-cache"


@dataclass(frozen=True)
class Encoded:
    """A file's identity: its sha256, and its gzip form when that is worth sending."""

    sha256: str
    gz: bytes | None


def compressible(mimetype: str) -> bool:
    return mimetype.startswith(_COMPRESSIBLE_PREFIXES)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no time stamp, no file name): the same input gives the same bytes."""
    return gzip.compress(data, GZIP_LEVEL, mtime=0)


def encode(data: bytes, mimetype: str, *, precompressed: bytes | None = None) -> Encoded:
    """``data``'s hash and gzip form. ``precompressed``: a gzip form made earlier, used when it
    decompresses to ``data`` exactly; else one kept on disk, or a new one."""
    digest = hashlib.sha256(data).hexdigest()
    gz = None
    if compressible(mimetype) and len(data) >= MIN_BYTES:
        if precompressed is not None and _unzips_to(precompressed, data):
            gz = precompressed
        else:
            gz = _gzip_kept(data, digest)
        if len(gz) > _WORTH * len(data):
            gz = None
    return Encoded(digest, gz)


def _gzip_kept(data: bytes, digest: str) -> bytes:
    """gzip of a large file is kept in the cache folder by its content's hash: the wasm takes
    seconds to compress, and each server worker, and each start, would pay them again."""
    if len(data) < DISK_CACHE_MIN_BYTES:
        return gzip_bytes(data)
    path = cache_path("gzip") / f"{digest}.gz"
    try:
        kept = path.read_bytes()
        if _unzips_to(kept, data):  # the cache folder is not trusted more than a .gz beside a file
            return kept
    except OSError:
        pass
    gz = gzip_bytes(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        partial.write_bytes(gz)
        partial.replace(path)  # atomic: another worker never reads half a file
    except OSError:
        pass  # a read-only cache only costs the compression next time
    return gz


def _unzips_to(gz: bytes, data: bytes) -> bool:
    try:
        return gzip.decompress(gz) == data
    except (OSError, EOFError):
        return False


def accepts_gzip(req: Request) -> bool:
    # Werkzeug reads q-values and "*": "gzip;q=0" refuses, "*" accepts.
    return req.accept_encodings["gzip"] > 0


def respond(encoded: Encoded, mimetype: str, *, body: bytes | Path, cache_control: str) -> Response:
    """The response for one file: gzip when the client takes it, the bytes (or the file at ``body``)
    otherwise; conditional on the ETag (304 when the client has this form already)."""
    if encoded.gz is not None and accepts_gzip(request):
        response = Response(encoded.gz, mimetype=mimetype)
        response.headers["Content-Encoding"] = "gzip"
        response.set_etag(f"{encoded.sha256}-gzip")
    elif isinstance(body, Path):
        response = send_file(body, mimetype=mimetype, etag=False, conditional=False, max_age=None)
        response.set_etag(encoded.sha256)
    else:
        response = Response(body, mimetype=mimetype)
        response.set_etag(encoded.sha256)
    if encoded.gz is not None:
        response.vary.add("Accept-Encoding")
    response.headers["Cache-Control"] = cache_control
    return response.make_conditional(request)


_lock = threading.Lock()


@functools.lru_cache(maxsize=64)
def _encoded_file(path: str, mtime_ns: int, size: int, mimetype: str) -> Encoded:
    beside = Path(path + ".gz")
    precompressed = beside.read_bytes() if beside.is_file() else None
    return encode(Path(path).read_bytes(), mimetype, precompressed=precompressed)


def encoded_file(path: Path, mimetype: str) -> Encoded:
    """``path``'s Encoded, made once per process and file version (its mtime and size)."""
    stat = path.stat()
    # One compression at a time: two first requests for the wasm would otherwise both spend seconds on it.
    with _lock:
        return _encoded_file(str(path), stat.st_mtime_ns, stat.st_size, mimetype)


def send_static(folder: Path, filename: str, *, cache_control: str = STATIC_CACHE_CONTROL) -> Response:
    """``folder/filename`` (a path from a URL), gzipped when the client takes it."""
    joined = safe_join(str(folder), filename)
    if joined is None or filename.endswith(".gz") or not Path(joined).is_file():
        abort(404)
    path = Path(joined)
    mimetype = mimetype_of(path.name)
    return respond(encoded_file(path, mimetype), mimetype, body=path, cache_control=cache_control)


def mimetype_of(name: str) -> str:
    import mimetypes

    if name.endswith(".wasm"):
        return "application/wasm"  # not in every system's mime.types, and browsers insist on it
    if name.endswith((".js", ".mjs")):
        return "text/javascript"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def install_static(app: Flask) -> None:
    """Serve ``app``'s static folder through :func:`send_static` (Flask's own view sends no gzip)."""

    def static(filename: str) -> Response:
        return send_static(Path(current_app.static_folder), filename)

    app.view_functions["static"] = static
