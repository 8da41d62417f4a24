"""HTTP routes. The YAML after `---` in each API view's docstring is its OpenAPI operation (see openapi.py)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from functools import partial

from flask import Blueprint, Request, current_app, jsonify, render_template, request
from markupsafe import Markup, escape
from werkzeug.datastructures import FileStorage

from face_emotion.inference.results import ResultError
from face_emotion.server.config import FALSE_WORDS, TRUE_WORDS
from face_emotion.server.errors import ApiError, result_error
from face_emotion.server.service import Service
from face_emotion.video.smoothing import DEFAULT_SMOOTH_S

api = Blueprint("api", __name__)
page = Blueprint("page", __name__)

# Raw-body uploads: any image type PIL may read, plus the generic binary type curl users send.
# SVG is an image/* type but a vector document we cannot rasterise.
_UNSUPPORTED_IMAGE_TYPES = {"image/svg+xml"}
# The values a yes/no query parameter takes, exactly as the OpenAPI document lists them (openapi.py
# builds its enum from this): anything else, "" and "TRUE" included, is a 400, so the document and
# the server agree on what is accepted.
FLAG_VALUES = TRUE_WORDS + FALSE_WORDS
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def service() -> Service:
    return current_app.extensions["face_emotion"]


def _query(name: str) -> str | None:
    """The one value of query parameter ``name`` (None when absent); given twice, a 400, since
    taking either one would be a guess."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise ApiError(400, "bad_parameter", f"query parameter {name!r} is given {len(values)} times: give it once")
    return values[0] if values else None


def _flag(name: str, default: bool) -> bool:
    text = _query(name)
    if text is None:
        return default
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ApiError(400, "bad_parameter",
                   f"query parameter {name!r} must be 1 or 0 (also {', '.join(FLAG_VALUES[1:])}), not {text!r}")


def _field_names(req: Request) -> list[str]:
    """The multipart field names received, for a hint. Werkzeug names a field it cannot read as text
    None, which does not sort among strings."""
    names = {name for name in (*req.files, *req.form)}
    return sorted("(unnamed)" if name is None else name for name in names)


def _one_file(req: Request, field: str, code: str, what: str) -> FileStorage:
    """The single file of multipart ``field``; none, or more than one, is a 400."""
    files = req.files.getlist(field)
    if not files:
        got = _field_names(req)
        hint = f" (the form has {got})" if got else ""
        raise ApiError(400, code, f"no file in the multipart field {field!r}{hint}")
    if len(files) > 1:
        raise ApiError(400, code, f"{len(files)} files in the multipart field {field!r}: send one {what} per request")
    return files[0]


def _read_file(storage: FileStorage, field: str) -> bytes:
    data = storage.read()
    if not data:
        raise ApiError(400, "no_image", f"the {field!r} field is empty: choose an image file")
    return data


def _unsupported(mimetype: str, *, batch: bool = False) -> ApiError:
    what = f"cannot read a {mimetype or 'missing'} content type: "
    if batch:
        return ApiError(415, "unsupported_media_type",
                        what + "send the images as multipart/form-data fields named 'images'")
    return ApiError(
        415, "unsupported_media_type",
        what + "send the image as the multipart field 'image' (multipart/form-data) "
        "or as the raw request body with Content-Type image/jpeg, image/png, ...",
    )


def _single_upload(req: Request) -> bytes:
    mimetype = req.mimetype
    if mimetype == "multipart/form-data":
        return _read_file(_one_file(req, "image", "no_image", "image (several go to /predict/batch)"), "image")
    if mimetype in _UNSUPPORTED_IMAGE_TYPES:
        raise _unsupported(mimetype)
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        data = req.get_data(cache=False)
        if not data:
            raise ApiError(400, "no_image", "the request body is empty: send the image bytes")
        return data
    if not mimetype and not req.content_length:
        raise ApiError(400, "no_image", "no image in the request: send the multipart field 'image' or a raw image body")
    raise _unsupported(mimetype)


@api.post("/predict")
def predict():
    """Emotions of the faces in one image.
    ---
    summary: Predict the emotion of every face in an image
    description: >
      Send the image as the multipart field `image`, or as the raw request body with an
      `image/*` Content-Type. Faces are found by the face detector and listed largest first;
      `emotion` and `confidence` are those of the largest face (null when no face was found).
    parameters:
      - explain  # a component (openapi.py): apispec writes the $ref
      - detect
    requestBody:
      required: true
      description: >
        One image: JPEG, PNG, WebP, BMP, TIFF or GIF (first frame). Its type is read from its bytes;
        an empty body or field is 400, an SVG body 415, more than one `image` field 400.
      content:
        multipart/form-data:
          schema: {$ref: "#/components/schemas/ImageUpload"}
          encoding:
            image:
              contentType: >-
                image/jpeg, image/png, image/webp, image/bmp, image/tiff, image/gif,
                application/octet-stream
        image/*:
          schema: {$ref: "#/components/schemas/ImageBytes"}
        application/octet-stream:
          schema: {$ref: "#/components/schemas/ImageBytes"}
    responses:
      "200":
        description: The faces found (possibly none) and their emotions.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Prediction"}
      "400": {$ref: "#/components/responses/BadRequest"}
      "408": {$ref: "#/components/responses/SlowClient"}
      "413": {$ref: "#/components/responses/TooLarge"}
      "415": {$ref: "#/components/responses/UnsupportedType"}
      "431": {$ref: "#/components/responses/HeadersTooLarge"}
      "503": {$ref: "#/components/responses/Timeout"}
    """
    start = time.perf_counter()
    explain = _flag("explain", False)
    detect = _flag("detect", True)
    result = service().predict_bytes(_single_upload(request), explain=explain, detect=detect)
    if not result.ok:
        raise result_error(result.error)
    # The answer is the result's own JSON (as `predict --json` prints it), timed over the request.
    return jsonify(replace(result, elapsed_ms=_elapsed_ms(start)).to_dict(include_heatmap=explain))


@api.post("/predict/batch")
def predict_batch():
    """Emotions for several images in one request.
    ---
    summary: Predict several images at once
    description: >
      Send several multipart fields named `images`. The answer lists one item per image, in the
      order sent, each with the fields of a Prediction; `error` is null, or the error of that
      image alone (then `faces` is empty and `image` null). The number of images is
      capped (FACE_EMOTION_MAX_BATCH); more is answered 413.
    parameters:
      - explain  # a component (openapi.py): apispec writes the $ref
      - detect
    requestBody:
      required: true
      description: >
        One to FACE_EMOTION_MAX_BATCH files in the field `images`, each an image as for /predict.
      content:
        multipart/form-data:
          schema: {$ref: "#/components/schemas/BatchUpload"}
          encoding:
            images:
              contentType: >-
                image/jpeg, image/png, image/webp, image/bmp, image/tiff, image/gif,
                application/octet-stream
    responses:
      "200":
        description: One result or error per image, in order.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/BatchPrediction"}
      "400": {$ref: "#/components/responses/BadRequest"}
      "408": {$ref: "#/components/responses/SlowClient"}
      "413": {$ref: "#/components/responses/TooLarge"}
      "415": {$ref: "#/components/responses/UnsupportedType"}
      "431": {$ref: "#/components/responses/HeadersTooLarge"}
      "503": {$ref: "#/components/responses/Timeout"}
    """
    start = time.perf_counter()
    explain = _flag("explain", False)
    detect = _flag("detect", True)
    if request.mimetype != "multipart/form-data":
        raise _unsupported(request.mimetype, batch=True)
    files = request.files.getlist("images") or request.files.getlist("image")
    if not files:
        raise ApiError(400, "no_image", "no files in the multipart field 'images'")
    limit = service().config.max_batch
    if len(files) > limit:
        raise ApiError(413, "too_many_images", f"{len(files)} images sent; the limit is {limit} per request")
    results = []
    deadline = service().deadline()  # one for the whole request, as for /predict
    for index, storage in enumerate(files):
        # A deadline passed (DeadlineExceeded) is not this image's fault: it ends the whole request (503).
        result = service().predict_bytes(storage.read(), explain=explain, detect=detect, deadline=deadline)
        # model and elapsed_ms are the request's, once, below the list.
        item = replace(result, model=None, elapsed_ms=None).to_dict(include_heatmap=explain)
        if not result.ok:  # worded as /predict would answer it alone
            public = result_error(result.error)
            item["error"] = ResultError(public.code, public.message).to_dict()
        results.append({"index": index, "filename": storage.filename or None, **item})
    return jsonify({"results": results, "model": service().model_name, "elapsed_ms": _elapsed_ms(start)})


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 1)


@api.get("/health")
def health():
    """Liveness and what is loaded.
    ---
    summary: Health check
    responses:
      "200":
        description: The service is up and its model is loaded.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Health"}
    """
    return jsonify(service().health())


@api.get("/model")
def model():
    """The loaded model's self-description.
    ---
    summary: Describe the loaded model
    responses:
      "200":
        description: Classes, architecture, input size, metrics and version.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/ModelInfo"}
    """
    return jsonify(service().model_info())


@api.get("/openapi.json")
def openapi_json():
    """This document.
    ---
    summary: The OpenAPI 3 description of this API
    responses:
      "200":
        description: An OpenAPI 3.0 document.
        content:
          application/json:
            schema: {type: object}
    """
    from face_emotion.server.openapi import build_spec

    return jsonify(build_spec(current_app))


@page.get("/")
def index():
    config = service().config
    return render_template("index.html", model=service().model_info(), max_upload_mb=config.max_upload_mb,
                           max_video_mb=config.max_video_mb, max_video_s=config.max_video_s,
                           video_settings=config.page_video_settings())


@page.get("/docs")
def docs():
    from face_emotion.server.openapi import build_spec, operations

    spec = build_spec(current_app)
    return render_template("docs.html", spec=spec, operations=operations(spec), code=_inline_code)


def _inline_code(text: str) -> Markup:
    """`name` in a docstring description -> <code>name</code>; everything else escaped."""
    parts = str(escape(text or "")).split("`")
    return Markup("".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts)))


def _number(name: str, default: float, low: float, high: float) -> float:
    text = _query(name)
    if text is None:
        return default
    # A plain decimal number, as the document's `type: number` reads: float() alone would also take
    # " 5", "1_0", "inf" and "nan".
    if not _NUMBER.fullmatch(text):
        raise ApiError(400, "bad_parameter", f"query parameter {name!r} must be a number, not {text!r}")
    value = float(text)
    if not low <= value <= high:
        raise ApiError(400, "bad_parameter", f"query parameter {name!r} must be between {low:g} and {high:g}")
    return value


@api.post("/predict/video")
def predict_video():
    """Emotions of the faces in a video clip, tracked over time.
    ---
    summary: Analyse a video clip
    description: >
      Send the clip as the multipart field `video` (MP4/MOV, MKV/WebM, AVI or MPEG-TS). Faces are
      detected every 0.2 s and followed in between, each keeps a `track_id`, and each track's
      probabilities are smoothed over `smooth` seconds. The answer has the `summary` (per track:
      first and last time, frames, dominant emotion, share of time per emotion, mean
      probabilities; and the clip's dominant emotion) and `frames`, one entry per analysed frame.
      Size, duration and frame size are checked from the container header before any frame is
      decoded (FACE_EMOTION_MAX_VIDEO_MB, _MAX_VIDEO_S, _MAX_VIDEO_PIXELS); the clip is decoded
      from memory and never written to disk.
    parameters:
      - name: sample_fps
        in: query
        description: frames analysed per second of clip (by default the server's FACE_EMOTION_VIDEO_SAMPLE_FPS).
        schema: {type: number, minimum: 0.1, maximum: 60}
      - name: smooth
        in: query
        description: time constant in seconds of each track's smoothing; 0 turns it off.
        schema: {type: number, minimum: 0, maximum: 10, default: DEFAULT_SMOOTH_S}
    requestBody:
      required: true
      description: >
        One clip in the field `video`: MP4/MOV/M4V/3GP, MKV/WebM, AVI or MPEG-TS. Its container is
        read from its bytes; an empty or unreadable clip is 400, more than one `video` field 400.
      content:
        multipart/form-data:
          schema: {$ref: "#/components/schemas/VideoUpload"}
          encoding:
            video:
              contentType: >-
                video/mp4, video/quicktime, video/x-matroska, video/webm, video/x-msvideo, video/mp2t,
                application/octet-stream
    responses:
      "200":
        description: The summary and the per-frame timeline (a clip without faces has no tracks).
        content:
          application/json:
            schema: {$ref: "#/components/schemas/VideoPrediction"}
      "400": {$ref: "#/components/responses/BadRequest"}
      "408": {$ref: "#/components/responses/SlowClient"}
      "413": {$ref: "#/components/responses/TooLarge"}
      "415": {$ref: "#/components/responses/UnsupportedType"}
      "431": {$ref: "#/components/responses/HeadersTooLarge"}
      "501": {$ref: "#/components/responses/MissingExtra"}
      "503": {$ref: "#/components/responses/Timeout"}
    """
    from face_emotion.errors import require_extra
    from face_emotion.server.service import DeadlineExceeded

    require_extra("video", "analysing video on this server")
    from face_emotion.video import (
        AnalysisTimeout,
        VideoDecodeError,
        VideoLimits,
        VideoOptions,
        VideoTooLargeError,
        analyse_clip,
    )

    start = time.perf_counter()
    config = service().config
    # Clips get their own body limit (Flask 3.1 reads it per request), above the one for images.
    request.max_content_length = config.max_video_bytes
    if request.content_length is not None and request.content_length > config.max_video_bytes:
        raise ApiError(413, "video_too_large", f"the request body is {request.content_length / 1e6:.1f} MB; "
                                               f"the limit for clips is {config.max_video_mb:g} MB")
    sample_fps = _number("sample_fps", config.video_sample_fps, 0.1, 60)
    smooth_s = _number("smooth", DEFAULT_SMOOTH_S, 0, 10)
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", f"cannot read a {request.mimetype or 'missing'} content type: "
                                                      "send the clip as the multipart/form-data field 'video'")
    storage = _one_file(request, "video", "no_video", "clip")
    data = storage.read()  # held in memory (InMemoryRequest): nothing of it reaches the disk
    if not data:
        raise ApiError(400, "no_video", "the 'video' field is empty: choose a video file")
    limits = VideoLimits(max_bytes=config.max_video_bytes, max_duration_s=config.max_video_s,
                         max_pixels=config.max_video_pixels)
    deadline = time.monotonic() + config.video_timeout_s
    service_predictor = service().predictor  # read here: the inference thread has no app context
    try:
        options = VideoOptions(sample_fps=sample_fps, smooth_s=smooth_s)
        analysis = service()._run_before(
            deadline, partial(analyse_clip, service_predictor, data, options, limits=limits, deadline=deadline))
    except VideoTooLargeError:
        raise  # its code names the limit; server.errors maps it to 413
    except VideoDecodeError as error:
        raise ApiError(400, error.code, f"not a readable video: {error}") from None
    except (AnalysisTimeout, DeadlineExceeded):
        raise DeadlineExceeded(config.video_timeout_s) from None
    finally:
        del data
    return jsonify(analysis.to_dict(sample_fps=sample_fps, smooth_s=smooth_s, elapsed_ms=_elapsed_ms(start)))


# The smoothing default has one home (video/smoothing.py); the OpenAPI text names it, not a copy.
predict_video.__doc__ = predict_video.__doc__.replace("DEFAULT_SMOOTH_S", str(DEFAULT_SMOOTH_S))
