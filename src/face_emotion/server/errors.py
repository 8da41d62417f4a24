"""Every error leaves the service as JSON {"error": {"code", "message"}}: never HTML, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from face_emotion.errors import FaceEmotionError
from face_emotion.inference.pipeline import PREDICTION_FAILED
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


class ApiError(FaceEmotionError):
    """A failure of the HTTP exchange itself (a missing field, a wrong type) with its own status."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message, code=code)
        self.status = status


# error code -> HTTP status: the one map from what went wrong (a FaceEmotionError's code, or a
# failed ImageResult's) to an answer. Codes not listed are the client's input: 400.
STATUS_BY_CODE = {
    "image_too_large": 413,
    "video_too_large": 413,
    "video_too_long": 413,
    "video_resolution_too_large": 413,
    "timeout": 503,
    "model_unavailable": 503,
    "detector_unavailable": 503,
    "engine_unavailable": 503,
    "missing_extra": 501,  # this installation lacks an optional extra (the message names it)
    PREDICTION_FAILED: 500,
}
INTERNAL_MESSAGE = "internal server error; the details are in the server log"


def api_error(code: str, message: str) -> ApiError:
    """What a client is told about ``code``: its status; for a failure inside the model, no
    details (they are in the log, and a traceback's text can hold paths and internals)."""
    if code == PREDICTION_FAILED:
        return ApiError(500, "internal_error", INTERNAL_MESSAGE)
    return ApiError(STATUS_BY_CODE.get(code, 400), code, message)


def result_error(error: ResultError) -> ApiError:
    return api_error(error.code, error.message)


def error_response(status: int, code: str, message: str, headers=None):
    response = jsonify({"error": ResultError(code, message).to_dict()})
    response.status_code = status
    if headers:
        for key, value in headers:
            response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(FaceEmotionError)
    def _expected_error(error: FaceEmotionError):
        answer = error if isinstance(error, ApiError) else api_error(error.code, error.message)
        return error_response(answer.status, answer.code, answer.message)

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
