"""`export --format web`: the page as a folder of static files that runs the model in the browser.

    DIR/index.html                         the page, "On this device" only (there is no server)
    DIR/static/...                         its scripts and styles
    DIR/model-files/manifest.json          what to load and how to preprocess (model_files.py)
    DIR/model-files/<sha256[:16]>/...      the classifier and CenterFace, light and exact, named by hash
    DIR/model-files/runtime/<sha256[:16]>/ onnxruntime-web, named by a hash of its files
    DIR/**/NAME.gz                         gzip copies of the files that compress (the server's bytes)
    DIR/HOSTING.md                         how to serve it: the .gz files, caching, threads

Any static file server can host it (python -m http.server, nginx, GitHub Pages, S3). Threads in
ONNX Runtime Web need cross-origin isolation, which only a host that sends COOP/COEP headers
gives; elsewhere the page runs on one thread (slower, the same answers). A host that sends the
.gz copies (nginx's gzip_static, Caddy's precompressed) makes the first visit a third as heavy.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from face_emotion.errors import FaceEmotionError

SERVER_DIR = Path(__file__).resolve().parent


class WebExportError(FaceEmotionError, RuntimeError):
    """The site could not be written; the message says how to fix it."""

    code = "export_failed"


@dataclass(frozen=True)
class WebExportResult:
    output: Path
    model: str
    quantization: str
    detector: str
    files: int
    bytes: int

    def to_dict(self) -> dict:
        return {"output": str(self.output), "model": self.model, "quantization": self.quantization,
                "detector": self.detector, "files": self.files, "bytes": self.bytes, "format": "web"}


def export_web(model: str | Path | None, output: Path, *, int8: bool = False, calibration_dir: Path | None = None,
               opset: int = 17, detector: str | None = None) -> WebExportResult:
    """Write the static site for ``model`` (models.files.resolve_model: None or "bundled", a run
    folder, a .safetensors or .onnx file) into ``output``.

    The classifier is the ONNX file `serve` would run (a folder's current model.onnx, else the
    derived form of its weights); with ``int8``, the int8 file shipped beside the weights (made
    from exactly them), else a fresh int8 export (inference.export, with its own parity check).
    ``detector``: "centerface" (default) or "none" (every image is one face).
    """
    from face_emotion.models.files import ONNX, SAFETENSORS, resolve_model, shipped_onnx

    output = Path(output)
    # The user's own arguments are checked first, before anything is exported or written.
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise WebExportError(f"{output} exists and is not an empty folder: choose a new one")
    if not int8:
        # A folder's current model.onnx, else its weights, run through their derived form as `serve` does.
        source = resolve_model(model, (ONNX, SAFETENSORS))
        _check_runtime()
        return _write_site(source if source.suffix.lower() == ONNX else _derived(source), output, detector)
    source = resolve_model(model)  # the weights to quantise
    _check_runtime()
    shipped = shipped_onnx(model, int8=True) if calibration_dir is None else None
    if shipped is not None:
        return _write_site(shipped, output, detector)
    import tempfile

    from face_emotion.inference.export import export_onnx

    with tempfile.TemporaryDirectory() as scratch:
        quantised = Path(scratch) / "model-int8.onnx"
        export_onnx(source, quantised, int8=True, opset=opset, calibration_dir=calibration_dir)
        return _write_site(quantised, output, detector)


def _check_runtime() -> None:
    from face_emotion.server.model_files import RUNTIME_DIR, RUNTIME_FILES

    missing = [name for name in RUNTIME_FILES if not (RUNTIME_DIR / name).is_file()]
    if missing:
        raise WebExportError(f"onnxruntime-web is not installed ({', '.join(missing)} missing under {RUNTIME_DIR}): "
                             f"in a checkout run `python web/vendor_runtime.py` (or `make setup`); "
                             f"a pip install has them: reinstall face-emotion-kit")


def _derived(weights: Path) -> Path:
    """The ONNX form `serve` would run for a .safetensors model."""
    from face_emotion.inference.onnx_cache import derive_onnx

    return derive_onnx(weights)


def _write_site(onnx_file: Path, output: Path, detector: str | None) -> WebExportResult:
    from face_emotion.faces import create_detector
    from face_emotion.inference.backends import OnnxRuntimeBackend
    from face_emotion.server.config import ServerConfig
    from face_emotion.server.model_files import RUNTIME_DIR, RUNTIME_FILES, build_site_files, runtime_digest

    backend = OnnxRuntimeBackend(onnx_file, num_threads=1)
    face_detector = None if detector == "none" else create_detector(detector or "centerface")
    site = build_site_files(backend.spec, Path(onnx_file), face_detector, quantization=backend.quantization)

    output.mkdir(parents=True, exist_ok=True)
    # onnxruntime-web goes under a name of its own hash, as the server serves it (model_files.py).
    shutil.copytree(SERVER_DIR / "static", output / "static",
                    ignore=shutil.ignore_patterns(".installed", "*.map", "*.gz", RUNTIME_DIR.name))
    vendor = output / "static" / RUNTIME_DIR.parent.name
    if vendor.is_dir() and not any(vendor.iterdir()):
        vendor.rmdir()
    files_dir = output / "model-files"
    for file in site.files:
        target = files_dir / file.url_part
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.data)
    runtime = f"runtime/{runtime_digest()[:16]}/"
    (files_dir / runtime).mkdir(parents=True)
    for name in RUNTIME_FILES:
        shutil.copyfile(RUNTIME_DIR / name, files_dir / runtime / name)
    # URLs in the manifest are relative to the manifest itself.
    manifest = {**site.manifest, "base": "./", "runtime": "./" + runtime, "runtime_ready": True}
    (files_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (output / "index.html").write_text(_render_page(backend.spec, ServerConfig()))
    (output / "HOSTING.md").write_text(HOSTING_NOTE)
    _precompress(output, RUNTIME_DIR)
    written = [p for p in output.rglob("*") if p.is_file()]
    return WebExportResult(output=output, model=backend.spec.name, quantization=backend.quantization,
                           detector="none" if face_detector is None else face_detector.name,
                           files=len(written), bytes=sum(p.stat().st_size for p in written))


def _precompress(output: Path, runtime_dir: Path) -> None:
    """NAME.gz beside every file of ``output`` that compresses (server/compression.py's rules and
    bytes); a .gz shipped beside a runtime file is reused when it holds the same bytes."""
    from face_emotion.server.compression import encode, mimetype_of

    for path in sorted(p for p in output.rglob("*") if p.is_file() and p.suffix != ".gz"):
        shipped = runtime_dir / (path.name + ".gz")
        encoded = encode(path.read_bytes(), mimetype_of(path.name),
                         precompressed=shipped.read_bytes() if shipped.is_file() else None)
        if encoded.gz is not None:
            path.with_name(path.name + ".gz").write_bytes(encoded.gz)


HOSTING_NOTE = """\
# Hosting this folder

Any static file server can host it: the page runs the model in the browser and sends nothing.

**Compression.** Every file that compresses has a gzip copy beside it (`NAME.gz`, made once at
export). A server that sends those to browsers that accept gzip makes the first visit about a
third as heavy (onnxruntime-web's wasm: 14 MB, 3.7 MB gzipped):

- nginx: `gzip_static on; gzip_vary on;` in the `location` serving this folder (and `types { application/wasm wasm; }`
  if your mime.types lacks it);
- Caddy: `file_server { precompressed gzip }`;
- GitHub Pages, Netlify and Cloudflare Pages compress on their own and ignore the .gz copies;
- `python -m http.server` sends the plain files: it works, only heavier.

**Caching.** Everything under `model-files/` except `manifest.json` is named by a hash of its
content (`model-files/<hash>/...`, `model-files/runtime/<hash>/...`): send it with
`Cache-Control: public, max-age=31536000, immutable`. Send the rest (`index.html`, `static/`,
`model-files/manifest.json`) with `Cache-Control: no-cache`, so a new export is picked up.

**Threads.** ONNX Runtime Web uses several threads only on a cross-origin isolated page: send
`Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp` with
every file. Without them the page runs on one thread: slower, the same answers.

**Weights.** The page loads lighter forms of the model files by default (weights stored as
int8/fp16; the server's exact files agree within about 0.04 on probabilities); `?weights=exact`
loads the exact ones.
"""


def _render_page(spec, config) -> str:
    """The server's own index.html template, with relative URLs and no server features."""
    import jinja2
    from markupsafe import Markup

    from face_emotion.server import content_security_policy

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(SERVER_DIR / "templates"), autoescape=True)

    def url_for(endpoint: str, filename: str | None = None, **_: object) -> str:
        if endpoint == "static" and filename:
            return f"static/{filename}"
        raise WebExportError(f"the page links to {endpoint!r}, which a static site does not have")

    def tojson(value) -> Markup:
        # As Flask's filter: safe inside a single-quoted HTML attribute.
        text = json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return Markup(text.replace("'", "\\u0027"))

    env.globals["url_for"] = url_for
    env.filters["tojson"] = tojson
    model = {"name": spec.name, "architecture": spec.architecture, "image_size": int(spec.preprocess.image_size),
             "classes": list(spec.classes)}
    return env.get_template("index.html").render(
        model=model, max_upload_mb=config.max_upload_mb, max_video_mb=config.max_video_mb,
        max_video_s=config.max_video_s, video_settings=config.page_video_settings(), static_site=True,
        manifest_url="model-files/manifest.json", csp=content_security_policy(meta=True),
    )
