"""The browser's copy of the path from pixels to model input (static/ondevice.js), step by step
against the Python it copies, run in Node: a change on either side fails here in seconds, before
the browser test (test_ondevice_browser.py) compares whole answers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support.clips import default_detector_available
from support.photos import face_photos

ONDEVICE_JS = Path(__file__).resolve().parents[1] / "src/face_emotion/server/static/ondevice.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

# Reads a JSON job on stdin: an RGB image (raw file), then the steps to run on it.
HARNESS = r"""
const F = require(process.argv[1]);
const fs = require("fs");
const job = JSON.parse(fs.readFileSync(0, "utf8"));
const S = F.steps;
const image = { width: job.width, height: job.height, data: new Uint8Array(fs.readFileSync(job.raw)) };
const hex = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("hex");
const out = {};
out.resized = job.sizes.map(([w, h, gap]) => hex(S.resize(image, w, h, gap).data));
const work = S.workingCopy(image, S.workingSide(job.detector, Math.max(image.width, image.height)),
                           job.detector.min_detection_side);
out.working = { width: work.image.width, height: work.image.height, scale: work.scale, data: hex(work.image.data) };
if (job.outputs) {
  const o = job.outputs, read = (name) => new Float32Array(fs.readFileSync(o[name]).buffer.slice(0));
  const found = S.nms(S.decodeCenterFace(read("heat"), read("log_size"), read("offset"), read("marks"),
                                         o.gh, o.gw, job.detector.threshold), job.detector.nms_iou);
  out.faces = S.largestFirst(found.map((f) => S.makeFace(f, work.scale, image.width, image.height)).filter(Boolean));
}
out.inputs = job.faces.map((face) => {
  const geometry = S.cropGeometry(face, job.pre.face_margin, job.pre.face_align, job.template);
  const crop = S.cut(image, geometry);
  const tensor = new Float32Array(3 * job.pre.image_size * job.pre.image_size);
  S.modelInput(crop, job.pre, tensor, 0);
  return { side: geometry.side, crop: hex(crop.data), tensor: hex(tensor) };
});
process.stdout.write(JSON.stringify(out));
"""


def _run(job: dict) -> dict:
    done = subprocess.run([NODE, "-e", HARNESS, str(ONDEVICE_JS)], input=json.dumps(job), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _detector_settings():
    from face_emotion.faces.base import MIN_DETECTION_SIDE
    from face_emotion.faces.centerface_detector import MIN_WORKING_SIDE, RELIABLE_FACE_PX

    return {"threshold": 0.5, "max_side": 1024, "min_face": 40, "nms_iou": 0.3, "reliable_face_px": RELIABLE_FACE_PX,
            "min_working_side": MIN_WORKING_SIDE, "min_detection_side": MIN_DETECTION_SIDE}


BUNDLED_LIKE = {"image_size": 80, "color_mode": "grayscale", "mean": [0.5] * 3, "std": [0.5] * 3, "face_margin": 0.0,
                "face_align": "landmarks", "face_resolution": 48}
RGB_EYES = {"image_size": 32, "color_mode": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "face_margin": 0.25, "face_align": "eyes", "face_resolution": None}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    return {p.name: p for p in face_photos(tmp_path_factory.mktemp("photos"))}


@pytest.mark.parametrize(("photo_name", "preprocess"), [
    ("astronaut.png", BUNDLED_LIKE), ("group-five.png", BUNDLED_LIKE), ("face-crop-120.png", BUNDLED_LIKE),
    ("group-huge.png", BUNDLED_LIKE), ("astronaut-roll-12.png", RGB_EYES),
], ids=["astronaut", "group", "small-crop", "huge-reducing-gap", "rgb-eyes"])
def test_every_step_matches_python_bit_for_bit(photo_name, preprocess, photos, tmp_path):
    from face_emotion.faces.base import working_copy
    from face_emotion.faces.centerface_detector import CenterFaceDetector
    from face_emotion.faces.crop import FACE_TEMPLATE, crop_for_model
    from face_emotion.models.spec import PreprocessSpec
    from face_emotion.transforms import eval_transform

    image = Image.open(photos[photo_name]).convert("RGB")
    raw = tmp_path / "image.rgb"
    raw.write_bytes(np.asarray(image).tobytes())
    settings = _detector_settings()
    job = {"raw": str(raw), "width": image.width, "height": image.height, "detector": settings,
           "template": {k: list(v) for k, v in FACE_TEMPLATE.items()}, "pre": preprocess, "faces": [],
           # The pipeline resizes keeping the aspect ratio (working copies) or square to square
           # (crops). Pillow 13 runs its two passes in another order for some other aspect changes
           # (e.g. wider but less tall), which ondevice.js does not copy.
           "sizes": [[round(image.width * 0.37), round(image.height * 0.37), 0], [image.width * 2, image.height * 2, 0],
                     [max(1, image.width // 5), max(1, image.height // 5), 2.0]]}
    if default_detector_available():
        detector = CenterFaceDetector(backend="onnxruntime")
        small, scale = working_copy(image, detector.working_side(max(image.size)))
        blob = np.zeros((1, 3, -(-small.height // 32) * 32, -(-small.width // 32) * 32), dtype=np.float32)
        blob[0, :, :small.height, :small.width] = np.asarray(small, dtype=np.float32).transpose(2, 0, 1)
        heat, log_size, offset, marks = detector._run(blob)
        outputs = {"gh": heat.shape[2], "gw": heat.shape[3]}
        for name, array in (("heat", heat), ("log_size", log_size), ("offset", offset), ("marks", marks)):
            outputs[name] = str(tmp_path / f"{name}.f32")
            Path(outputs[name]).write_bytes(np.ascontiguousarray(array[0], dtype=np.float32).tobytes())
        job["outputs"] = outputs
        faces = detector.detect(image)
        assert faces, photo_name
        job["faces"] = [{"box": list(f.box_xywh), "score": f.score,
                         "landmarks": {k: list(v) for k, v in f.landmarks.items()}} for f in faces]
    out = _run(job)

    for (w, h, gap), got in zip(job["sizes"], out["resized"]):
        expected = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=gap or None)
        assert bytes.fromhex(got) == np.asarray(expected).tobytes(), (w, h, gap)
    if "outputs" not in job:
        return
    small, scale = working_copy(image, detector.working_side(max(image.size)))
    working = out["working"]
    assert (working["width"], working["height"], working["scale"]) == (small.width, small.height, scale)
    assert bytes.fromhex(out["working"]["data"]) == np.asarray(small).tobytes()
    assert [f["box"] for f in out["faces"]] == [list(f.box_xywh) for f in faces]
    for got, face in zip(out["faces"], faces):
        assert got["score"] == pytest.approx(face.score, abs=1e-9)
        for name, point in face.landmarks.items():
            assert got["landmarks"][name] == pytest.approx(list(point), abs=1e-4)
    spec = PreprocessSpec(**{**preprocess, "mean": tuple(preprocess["mean"]), "std": tuple(preprocess["std"])})
    transform = eval_transform(spec)
    for got, face in zip(out["inputs"], faces):
        crop, geometry = crop_for_model(image, face, spec)
        assert got["side"] == geometry.side
        assert bytes.fromhex(got["crop"]) == np.asarray(crop).tobytes()
        tensor = np.frombuffer(bytes.fromhex(got["tensor"]), dtype=np.float32).reshape(3, spec.image_size, -1)
        np.testing.assert_allclose(tensor, transform(crop), rtol=0, atol=1e-6)


# Windows of the working copy (live frames search for a face where it was in the last frame).
WINDOW_HARNESS = r"""
const F = require(process.argv[1]);
const fs = require("fs");
const job = JSON.parse(fs.readFileSync(0, "utf8"));
const S = F.steps;
const image = { width: job.width, height: job.height, data: new Uint8Array(fs.readFileSync(job.raw)) };
const hex = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("hex");
const out = [];
for (const maxSide of job.sides) {
  const work = S.workingSize(image.width, image.height, maxSide, job.min_side);
  const full = S.workingCopy(image, maxSide, job.min_side).image;
  const windows = job.boxes.map((box) => S.detectorWindow({ box: box }, work));
  out.push({ work: work, windows: windows, full: hex(full.data),
             pixels: windows.map((w) => hex(S.resizeWindow(image, work.width, work.height, w.x, w.y,
                                                           Math.min(w.width, work.width - w.x),
                                                           Math.min(w.height, work.height - w.y)).data)) });
}
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.parametrize("photo_name", ["astronaut.png", "face-crop-120.png"], ids=["shrunk", "enlarged"])
def test_detector_windows_are_the_working_copys_own_pixels(photo_name, photos, tmp_path):
    """A window is cut from the detector input the whole-frame search would run on (the working
    copy padded to multiples of 32): the same bytes, on the same 32-pixel grid, inside it."""
    image = Image.open(photos[photo_name]).convert("RGB")
    raw = tmp_path / "image.rgb"
    raw.write_bytes(np.asarray(image).tobytes())
    w, h = image.size
    boxes = [[w // 3, h // 4, w // 5, h // 4], [0, 0, w // 6, h // 6], [w - w // 4, h - h // 3, w // 4, h // 3]]
    sides = [max(w, h), round(max(w, h) * 0.7), 300]  # as is, shrunk, and (small photo) enlarged
    done = subprocess.run([NODE, "-e", WINDOW_HARNESS, str(ONDEVICE_JS)], capture_output=True, text=True, timeout=120,
                          input=json.dumps({"raw": str(raw), "width": w, "height": h, "sides": sides, "boxes": boxes,
                                            "min_side": 160}))
    assert done.returncode == 0, done.stderr
    for side, got in zip(sides, json.loads(done.stdout)):
        work = got["work"]
        full = np.frombuffer(bytes.fromhex(got["full"]), dtype=np.uint8).reshape(work["height"], work["width"], 3)
        padded = (-(-work["width"] // 32) * 32, -(-work["height"] // 32) * 32)
        for window, pixels in zip(got["windows"], got["pixels"]):
            x, y, ww, wh = window["x"], window["y"], window["width"], window["height"]
            assert all(v % 32 == 0 for v in (x, y, ww, wh)), (side, window)
            assert 0 <= x and 0 <= y and x + ww <= padded[0] and y + wh <= padded[1], (side, window)
            part = np.frombuffer(bytes.fromhex(pixels), dtype=np.uint8)
            inside = full[y:y + wh, x:x + ww]
            np.testing.assert_array_equal(part.reshape(inside.shape), inside, err_msg=f"{side} {window}")
