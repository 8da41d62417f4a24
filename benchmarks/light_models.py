"""Lighter model files for the browser, against the fp32 files the server runs: do the answers hold?

    python benchmarks/light_models.py PHOTO_OR_FOLDER... [--crops FOLDER --crop-limit N]

For the classifier (the bundled model's fp32 ONNX form) and CenterFace, each stored as
inference/compact_onnx.py writes them ("fp16"; "int8>=N": per-channel int8 for tensors of N values
and more, fp16 below; "int8": every weight int8), and the bundled static-int8 classifier
(model.int8.onnx), every photo goes through the Python pipeline (ONNX
Runtime on the CPU) once with the fp32 pair and once with each lighter pair, and the faces are
paired by box overlap. Reported per pair: file sizes (raw and gzip), faces, top-1 agreement (a
face found on one side only counts against it), the largest gap between the fp32 answer's top two
probabilities where the labels differ (a near-tie flips on any rounding), largest probability
difference, smallest box IoU and largest box-corner difference (px). ``--crops``: also the
classifier alone on face crops as given (`evaluate --no-detect`'s reading), a larger sample for
top-1 agreement.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _iou(a: dict, b: dict) -> float:
    w = max(0.0, min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"]))
    h = max(0.0, min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"]))
    union = a["width"] * a["height"] + b["width"] * b["height"] - w * h
    return w * h / union if union else 0.0


def _images(paths: list[Path]) -> list[Path]:
    from face_emotion.imageio import is_image_path

    found = []
    for path in paths:
        found += sorted(p for p in path.rglob("*") if is_image_path(p)) if path.is_dir() else [path]
    return found


def _answers(predictor, images) -> list[list[dict]]:
    return [[face.to_dict(include_heatmap=False) for face in predictor.predict(image)] for image in images]


def compare(reference: list[list[dict]], other: list[list[dict]]) -> dict:
    faces = agree = 0
    prob_diff, box_iou, corner, margin = 0.0, 1.0, 0.0, 0.0
    for ref_faces, faces_b in zip(reference, other, strict=True):
        left = list(faces_b)
        paired = 0
        for face in ref_faces:
            best = max(left, key=lambda f: _iou(face["box"], f["box"]), default=None)
            if best is None or _iou(face["box"], best["box"]) <= 0.5:
                continue
            left.remove(best)
            paired += 1
            agree += face["emotion"] == best["emotion"]
            if face["emotion"] != best["emotion"]:  # how close the fp32 answer's top two were
                top, second = sorted(face["probabilities"].values())[:-3:-1]
                margin = max(margin, top - second)
            prob_diff = max(prob_diff, max(abs(face["probabilities"][k] - best["probabilities"][k])
                                           for k in face["probabilities"]))
            box_iou = min(box_iou, _iou(face["box"], best["box"]))
            corner = max(corner, max(abs(face["box"][k] - best["box"][k]) for k in face["box"]))
        faces += len(ref_faces) + len(left)  # unpaired faces on either side count once
    return {"faces": faces, "agree": agree, "prob_diff": prob_diff, "box_iou": box_iou, "corner_px": corner,
            "margin": margin}


def crop_agreement(backends: dict, folder: Path, limit: int) -> None:
    from face_emotion.imageio import load_image
    from face_emotion.inference.predictor import Predictor

    paths = _images([folder])
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:limit]]
    images = [load_image(p) for p in paths]
    probs = {}
    for name, backend in backends.items():
        predictor = Predictor(backend, None)
        probs[name] = np.concatenate([predictor.probabilities(predictor.batch(images[i:i + 64]))
                                      for i in range(0, len(images), 64)])
    print(f"\nclassifier alone on {len(images)} crops as given from {folder}:")
    print("| classifier | top-1 agreement with fp32 | max prob. difference | mean prob. difference |")
    print("|---|---:|---:|---:|")
    for name, p in probs.items():
        agree = (p.argmax(1) == probs["fp32"].argmax(1)).mean()
        diff = np.abs(p - probs["fp32"])
        print(f"| {name} | {agree:.2%} | {diff.max():.4f} | {diff.mean():.5f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--crops", type=Path, help="a folder of face crops for the classifier alone")
    parser.add_argument("--crop-limit", type=int, default=2000)
    args = parser.parse_args(argv)

    from face_emotion.faces.centerface_detector import CenterFaceDetector, default_model_path, runnable_model
    from face_emotion.imageio import load_image
    from face_emotion.inference.backends import OnnxRuntimeBackend
    from face_emotion.inference.compact_onnx import MIN_ELEMENTS, compact_onnx
    from face_emotion.inference.onnx_cache import derive_onnx
    from face_emotion.inference.predictor import Predictor
    from face_emotion.models.files import BUNDLED_MODEL_DIR, bundled_model_path

    images = [load_image(p) for p in _images(args.photos)]
    fp32_classifier = derive_onnx(bundled_model_path()).read_bytes()
    fp32_detector = runnable_model(default_model_path().read_bytes())
    def variants(fp32: bytes) -> dict[str, bytes]:
        found = {"fp32": fp32, "fp16": compact_onnx(fp32)}
        for n in (2**17, 2**16):
            found[f"int8>={n}"] = compact_onnx(fp32, int8_min_elements=n)
        found["int8"] = compact_onnx(fp32, int8_min_elements=MIN_ELEMENTS)
        return found

    classifiers = {**variants(fp32_classifier), "static-int8": (BUNDLED_MODEL_DIR / "model.int8.onnx").read_bytes()}
    detectors = variants(fp32_detector)
    print("| file | bytes | gzip -9 bytes |")
    print("|---|---:|---:|")
    for kind, files in (("classifier", classifiers), ("detector", detectors)):
        for name, data in files.items():
            print(f"| {kind} {name} | {len(data):,} | {len(gzip.compress(data, 9)):,} |")
    with tempfile.TemporaryDirectory() as scratch:
        backends, finders = {}, {}
        for name, data in classifiers.items():
            (Path(scratch) / f"c-{name}.onnx").write_bytes(data)
            backends[name] = OnnxRuntimeBackend(Path(scratch) / f"c-{name}.onnx", num_threads=1)
        for name, data in detectors.items():
            (Path(scratch) / f"d-{name}.onnx").write_bytes(data)
            finders[name] = CenterFaceDetector(model_path=Path(scratch) / f"d-{name}.onnx", num_threads=1)
        reference = _answers(Predictor(backends["fp32"], finders["fp32"]), images)
        print(f"\n{len(images)} photos, {sum(map(len, reference))} faces found by the fp32 pair")
        print("| classifier | detector | faces | top-1 agreement | fp32 top-two gap at a disagreement | "
              "max prob. difference | min box IoU | max box difference px |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        pairs = [(c, "fp32") for c in classifiers if c != "fp32"] + [("fp32", d) for d in detectors if d != "fp32"]
        pairs += [("fp16", "fp16"), ("int8>=131072", "fp16"), ("int8>=131072", "int8>=131072"),
                  ("int8>=65536", "int8>=65536"), ("int8", "int8")]
        for c, d in pairs:
            got = compare(reference, _answers(Predictor(backends[c], finders[d]), images))
            print(f"| {c} | {d} | {got['faces']} | {got['agree']}/{got['faces']} ({got['agree'] / got['faces']:.1%}) "
                  f"| {got['margin']:.4f} | {got['prob_diff']:.4f} | {got['box_iou']:.3f} | {got['corner_px']:.1f} |")
        if args.crops:
            crop_agreement(backends, args.crops, args.crop_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
