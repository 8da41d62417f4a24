"""Every error leaves the service as JSON {"error": {"code", "message"}}: never HTML, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from face_emotion.inference.results import ResultError

log = logging.getLogger(__name__)

# Werkzeug's names for the statuses a client will meet, as stable snake_case codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An expected failure with a status, a stable machine-readable code and a message for people."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, headers=None):
    response = jsonify({"error": ResultError(code, message).to_dict()})
    response.status_code = status
    if headers:
        for key, value in headers:
            response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.code, error.message)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        status = error.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        message = error.description or error.name
        if status == 404:
            message = f"nothing at {request.path}: the API is described at /docs and /openapi.json"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            if limit:
                message = f"the request body is larger than the {limit / (1024 * 1024):g} MB limit"
        # Keep headers such as Allow (405) but not the HTML content type.
        headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        # The last resort: the details go to the log, the client learns only that it was our fault.
        log.exception("unhandled error while serving a request")
        return error_response(500, "internal_error", "internal server error; the details are in the server log")
