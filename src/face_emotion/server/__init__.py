"""The web service: a JSON API over the Predictor and the page that uses it.

    app = create_app({"model": "runs/exp1", "max_upload_mb": 5})

No module-level app and no environment read here: `face-emotion serve` builds the settings
from flags and FACE_EMOTION_* variables and calls :func:`create_app` in each worker.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

from flask import Flask, Request, request

from face_emotion.server.config import ConfigError, ServerConfig

__all__ = ["create_app", "ServerConfig", "ConfigError"]

# The page's one security policy, served as a header here and written as a <meta> tag into the
# static site (`export --format web`). `style-src 'self'` and `script-src 'self'`: the page has
# no inline script or style attribute; 'wasm-unsafe-eval' lets it compile WebAssembly (ONNX
# Runtime Web, "On this device") and nothing else. data: images are the heatmaps the API returns;
# blob: is the preview of the chosen file.
_PAGE_POLICY = (
    "default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", "style-src 'self'", "img-src 'self' data: blob:",
    "media-src 'self' blob: mediastream:", "connect-src 'self'", "font-src 'self'", "object-src 'none'",
    "base-uri 'none'", "form-action 'self'",
)


def content_security_policy(*, meta: bool = False) -> str:
    """The page's Content-Security-Policy; ``meta``: as a <meta> tag may carry it (a tag cannot
    say frame-ancestors, which browsers ignore there)."""
    return "; ".join(_PAGE_POLICY if meta else (*_PAGE_POLICY, "frame-ancestors 'none'"))


CONTENT_SECURITY_POLICY = content_security_policy()
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=(), usb=()",
}


class InMemoryRequest(Request):
    """Multipart uploads stay in memory: Werkzeug would spill files over 500 kB to a temporary file.

    The body is bounded by MAX_CONTENT_LENGTH before anything is buffered, so memory is too.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def _split_config(config: ServerConfig | Mapping[str, Any] | None) -> tuple[ServerConfig, dict[str, Any]]:
    if isinstance(config, ServerConfig):
        return config, {}
    config = dict(config or {})
    # UPPER_CASE keys are Flask settings (TESTING, ...); lower-case ones are ServerConfig fields.
    flask_settings = {k: v for k, v in config.items() if k.isupper()}
    settings = ServerConfig.from_mapping({k: v for k, v in config.items() if not k.isupper()})
    return settings, flask_settings


def create_app(config: ServerConfig | Mapping[str, Any] | None = None, predictor=None) -> Flask:
    """Build the Flask app.

    ``config``: a ServerConfig, or a dict of its field names (plus optional UPPER_CASE Flask
    settings). ``predictor``: an already loaded Predictor (tests pass a fake); None loads the
    configured model now, once for this process (raises ModelLoadError when there is none).
    """
    from face_emotion.server.compression import install_static
    from face_emotion.server.errors import register_error_handlers
    from face_emotion.server.model_files import model_files
    from face_emotion.server.routes import api, page
    from face_emotion.server.service import Service, load_predictor

    settings, flask_settings = _split_config(config)
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.request_class = InMemoryRequest
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes)
    app.config.update(flask_settings)
    app.json.sort_keys = False
    app.json.compact = True

    if predictor is None:
        predictor = load_predictor(settings)
    app.extensions["face_emotion"] = Service(predictor=predictor, config=settings)

    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(page)
    app.register_blueprint(model_files)
    install_static(app)  # the page's files gzipped, as a static file server sends them
    _install_headers(app, settings)
    return app


def _install_headers(app: Flask, settings: ServerConfig) -> None:
    allowed = set(settings.cors_origins)

    @app.after_request
    def _headers(response):
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if response.mimetype == "application/json":
            # Predictions are about people's photos: no cache should keep them.
            response.headers.setdefault("Cache-Control", "no-store")
        origin = request.headers.get("Origin")
        if origin and allowed and ("*" in allowed or origin.rstrip("/") in allowed):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
            response.headers.add("Vary", "Origin")
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = "Content-Type"
                response.headers["Access-Control-Max-Age"] = "600"
        return response
