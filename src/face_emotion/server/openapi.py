"""The OpenAPI 3 document, generated from the code with apispec.

Paths come from the app's URL map; each operation is the YAML after `---` in its view's
docstring (routes.py); the face and box schemas are derived from the result dataclasses in
face_emotion.inference.results, so the document cannot drift from what `to_dict()` emits.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from apispec import APISpec
from apispec.yaml_utils import load_yaml_from_docstring
from flask import Flask

from face_emotion.inference.results import Box, FacePrediction
from face_emotion.version import __version__

OPENAPI_VERSION = "3.0.3"
_METHOD_ORDER = ("get", "post", "put", "patch", "delete")

# Annotation (as written in the dataclass; results.py uses postponed annotations) -> JSON schema.
_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "dict[str, float]": {"type": "object", "additionalProperties": {"type": "number"}},
    "dict[str, int]": {"type": "object", "additionalProperties": {"type": "integer"}},
    "bytes": {"type": "string", "format": "byte"},
}

_FIELD_NOTES = {
    ("Box", "x"): "left edge, pixels of the EXIF-upright image",
    ("Box", "y"): "top edge, pixels",
    ("Box", "width"): "pixels",
    ("Box", "height"): "pixels",
    ("Face", "score"): "face-detector confidence, 0-1",
    ("Face", "emotion"): "the most probable class",
    ("Face", "confidence"): "probability of `emotion`, 0-1",
    ("Face", "probabilities"): "every class of the model; sums to 1",
    ("Face", "heatmap_png"): "base64 8-bit PNG heatmap (occlusion sensitivity) covering the face box "
                             "(only with ?explain=1)",
}


def dataclass_schema(cls: type, name: str, refs: dict[str, str] | None = None) -> dict[str, Any]:
    """A JSON schema for a result dataclass: its fields, types and which are required."""
    refs = refs or {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        optional = annotation.endswith("| None") or f.default is None
        annotation = annotation.replace("| None", "").strip()
        if annotation in refs:
            prop: dict[str, Any] = {"$ref": f"#/components/schemas/{refs[annotation]}"}
        elif annotation in _TYPES:
            prop = dict(_TYPES[annotation])
        else:
            raise TypeError(f"no JSON schema for {cls.__name__}.{f.name}: {annotation}; add it to _TYPES")
        note = _FIELD_NOTES.get((name, f.name))
        if note and "$ref" not in prop:
            prop["description"] = note
        properties[f.name] = prop
        if not optional:
            required.append(f.name)
    return {"type": "object", "properties": properties, "required": required}


def _error_object() -> dict[str, Any]:
    """ResultError.to_dict(): the one shape of an error, in a 4xx body and in an image's result."""
    return {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "stable machine-readable code, e.g. invalid_image"},
            "message": {"type": "string", "description": "what went wrong and how to fix it"},
        },
    }


def _error_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["error"], "properties": {"error": _error_object()}}


def _image_result_properties() -> dict[str, Any]:
    """ImageResult.to_dict() (without `path`, which the API does not set)."""
    nullable_number = {"type": "number", "nullable": True}
    return {
        "emotion": {"type": "string", "nullable": True, "description": "of the largest face; null when no face"},
        "confidence": {**nullable_number, "description": "of the largest face; null when no face"},
        "faces": {"type": "array", "items": {"$ref": "#/components/schemas/Face"}, "description": "largest first"},
        "image": {"type": "object", "required": ["width", "height"], "nullable": True,
                  "description": "size in pixels of the EXIF-upright image; null when it could not be read",
                  "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}}},
        "error": {**_error_object(), "nullable": True,
                  "description": "null, or (in a batch item) why this image has no result"},
    }


def _answered_by_properties() -> dict[str, Any]:
    return {
        "model": {"type": "string", "description": "name of the model that answered"},
        "elapsed_ms": {"type": "number", "description": "server time for this request, milliseconds"},
    }


def _prediction_schema() -> dict[str, Any]:
    properties = {**_image_result_properties(), **_answered_by_properties()}
    return {"type": "object", "required": list(properties), "properties": properties}


def _batch_schema() -> dict[str, Any]:
    item_properties = {
        "index": {"type": "integer"},
        "filename": {"type": "string", "nullable": True},
        **_image_result_properties(),
    }
    item = {
        "type": "object",
        "required": list(item_properties),
        "description": "one image's result; `error` is null or the error of this image alone",
        "properties": item_properties,
    }
    return {
        "type": "object",
        "required": ["results", "model", "elapsed_ms"],
        "properties": {"results": {"type": "array", "items": item}, **_answered_by_properties()},
    }


def _video_schema() -> dict[str, Any]:
    """POST /predict/video: VideoSummary.to_dict() and FrameResult.to_dict() (face_emotion.video)."""
    probabilities = {"type": "object", "additionalProperties": {"type": "number"}}
    track = {
        "type": "object",
        "required": ["track_id", "first_s", "last_s", "frames", "dominant_emotion", "share", "mean_probabilities"],
        "properties": {
            "track_id": {"type": "integer", "description": "the same number for one person across frames, from 1"},
            "first_s": {"type": "number"}, "last_s": {"type": "number"},
            "frames": {"type": "integer", "description": "analysed frames in which the face was seen"},
            "dominant_emotion": {"type": "string", "description": "the label it had in the most frames"},
            "share": {**probabilities, "description": "emotion -> share of the track's frames with that label"},
            "mean_probabilities": probabilities,
        },
    }
    tracked_face = {"allOf": [{"$ref": "#/components/schemas/Face"}, {
        "type": "object", "required": ["track_id"],
        "properties": {"track_id": {"type": "integer", "nullable": True,
                                    "description": "null on a face's first frame, before the tracker numbers it"}}}]}
    frame = {
        "type": "object",
        "required": ["frame", "time_s", "faces"],
        "properties": {
            "frame": {"type": "integer", "description": "index among the clip's decoded frames, from 0"},
            "time_s": {"type": "number"},
            "emotion": {"type": "string", "nullable": True}, "confidence": {"type": "number", "nullable": True},
            "faces": {"type": "array", "items": tracked_face, "description": "by track id; probabilities smoothed"},
        },
    }
    summary = {
        "type": "object",
        "required": ["frames_analysed", "duration_s", "dominant_emotion", "tracks"],
        "properties": {
            "frames_analysed": {"type": "integer"}, "duration_s": {"type": "number"},
            "video": {"type": "object", "description": "width, height, fps, duration_s, frames, container, codec"},
            "dominant_emotion": {"type": "string", "nullable": True,
                                 "description": "the label of the most face-frames; null when no face was found"},
            "tracks": {"type": "array", "items": track},
        },
    }
    properties = {
        "summary": summary, "frames": {"type": "array", "items": frame},
        "classes": {"type": "array", "items": {"type": "string"}},
        "sample_fps": {"type": "number"}, "smooth_s": {"type": "number"}, **_answered_by_properties(),
    }
    return {"type": "object", "required": list(properties), "properties": properties}


def _health_schema() -> dict[str, Any]:
    nullable_string = {"type": "string", "nullable": True}
    return {
        "type": "object",
        "required": ["status", "model", "version"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "model": {"type": "string"},
            "backend": nullable_string,
            "detector": nullable_string,
            "version": {"type": "string", "description": "face-emotion package version"},
            "uptime_s": {"type": "number"},
        },
    }


def _model_schema() -> dict[str, Any]:
    nullable_string = {"type": "string", "nullable": True}
    return {
        "type": "object",
        "required": ["name", "architecture", "classes", "image_size"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "architecture": {"type": "string"},
            "classes": {"type": "array", "items": {"type": "string"}},
            "image_size": {"type": "integer", "description": "square model input, pixels"},
            "color_mode": {"type": "string", "enum": ["rgb", "grayscale"]},
            "metrics": {"type": "object", "description": "test-set metrics recorded at training time"},
            "backend": nullable_string,
            "detector": nullable_string,
        },
    }


def _flag_parameter(description: str, default: bool) -> dict[str, Any]:
    """A yes/no query parameter: the enum is exactly what routes._flag accepts; anything else is 400."""
    from face_emotion.server.routes import FLAG_VALUES

    return {"description": description, "required": False,
            "schema": {"type": "string", "enum": list(FLAG_VALUES), "default": "1" if default else "0"}}


# What the upload routes read: a non-empty file (an empty one is a 400).
_FILE = {"type": "string", "format": "binary", "minLength": 1}


def _upload_schema(field: str, description: str) -> dict[str, Any]:
    return {"type": "object", "required": [field], "properties": {field: {**_FILE, "description": description}}}


def _batch_upload_schema(max_batch: int) -> dict[str, Any]:
    return {"type": "object", "required": ["images"], "properties": {"images": {
        "type": "array", "minItems": 1, "maxItems": max_batch,
        # An empty or unreadable file is that item's error in a 200, not the request's.
        "items": {"type": "string", "format": "binary"},
        "description": f"1 to {max_batch} images (FACE_EMOTION_MAX_BATCH); more is a 413"}}}


def _response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of this app (built once per app)."""
    cached = app.extensions.get("face_emotion_openapi")
    if cached is not None:
        return cached
    spec = APISpec(
        title="face-emotion",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        info={"description": "Facial emotion recognition: find the faces in an image and tell their emotions. "
                             "Every error is JSON {\"error\": {\"code\", \"message\"}}."},
    )
    spec.components.schema("Box", dataclass_schema(Box, "Box"))
    spec.components.schema("Face", dataclass_schema(FacePrediction, "Face", refs={"Box": "Box"}))
    spec.components.schema("Prediction", _prediction_schema())
    spec.components.schema("BatchPrediction", _batch_schema())
    spec.components.schema("VideoPrediction", _video_schema())
    spec.components.schema("Health", _health_schema())
    spec.components.schema("ModelInfo", _model_schema())
    spec.components.schema("Error", _error_schema())
    spec.components.schema("ImageUpload", _upload_schema("image", "one image"))
    spec.components.schema("ImageBytes", {**_FILE, "description": "the image file's bytes"})
    spec.components.schema("BatchUpload", _batch_upload_schema(app.extensions["face_emotion"].config.max_batch))
    spec.components.schema("VideoUpload", _upload_schema("video", "one clip"))
    spec.components.parameter("explain", "query", _flag_parameter(
        "1 to add a heatmap (base64 PNG over the face box; occlusion sensitivity) to every face.", False))
    spec.components.parameter("detect", "query", _flag_parameter(
        "0 when the image is already a face crop (the whole image is one face).", True))
    spec.components.response("BadRequest", _response("No image, not an image, a corrupt image, or a bad parameter."))
    spec.components.response("TooLarge", _response("The body, the image's pixel count or the batch is over the limit."))
    spec.components.response("UnsupportedType", _response("The request's Content-Type is not one the API reads."))
    spec.components.response("MissingExtra", _response("This installation lacks an optional extra the request needs "
                                                       "(code `missing_extra`; the message names it)."))
    spec.components.response("Timeout", _response("The prediction did not finish within the server's deadline "
                                                  "(FACE_EMOTION_INFERENCE_TIMEOUT_S; code `timeout`), or the "
                                                  "worker is at its connection cap (`too_many_connections`, with "
                                                  "Retry-After) or holds too many unfinished uploads "
                                                  "(`server_busy`)."))
    spec.components.response("SlowClient", _response("The request's headers did not arrive within the header "
                                                     "deadline, or its body stalled (code `request_timeout`); the "
                                                     "connection is closed."))
    spec.components.response("HeadersTooLarge", _response("The request's headers are over 64 kB."))

    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith("api."):
            continue
        doc = load_yaml_from_docstring(app.view_functions[rule.endpoint].__doc__ or "")
        if not doc:
            continue
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        operations = {}
        for method in methods:
            operation = dict(doc)
            operation.setdefault("operationId", rule.endpoint.split(".", 1)[1])
            operations[method.lower()] = operation
        spec.path(path=_openapi_path(rule.rule), operations=operations)
    document = spec.to_dict()
    app.extensions["face_emotion_openapi"] = document
    return document


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's operations, flattened for the /docs page."""
    rows = []
    for path, item in document.get("paths", {}).items():
        for method in _METHOD_ORDER:
            if method in item:
                operation = item[method]
                rows.append({
                    "path": path,
                    "method": method.upper(),
                    "id": operation.get("operationId", f"{method}-{path}"),
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": [_resolve(document, "parameters", p) for p in operation.get("parameters", [])],
                    "request_types": list((operation.get("requestBody") or {}).get("content", {})),
                    "request_description": (operation.get("requestBody") or {}).get("description", ""),
                    "responses": [
                        {"status": status, "description": _describe(document, response),
                         "schema": _schema_name(response)}
                        for status, response in operation.get("responses", {}).items()
                    ],
                })
    return rows


def _resolve(document: dict[str, Any], kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """``item``, or the component its $ref names (#/components/<kind>/<name>)."""
    ref = item.get("$ref")
    return document["components"][kind][ref.rsplit("/", 1)[1]] if ref else item


def _describe(document: dict[str, Any], response: dict[str, Any]) -> str:
    return _resolve(document, "responses", response).get("description", "")


def _schema_name(response: dict[str, Any]) -> str | None:
    if "$ref" in response:
        return "Error"
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[1] if ref else None
