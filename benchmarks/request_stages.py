"""Where the time of one POST /predict goes, before and after the serving work of issue 13.

    python benchmarks/request_stages.py [--model RUN_DIR_OR_FILE] [--image PHOTO] [--image-side 320]
        [--repeat 40] [--threads 1]

Stages, in the order a request runs them: decode (JPEG bytes -> upright RGB), detect (CenterFace),
crop (faces -> crops), transform (crops -> the float batch), classify (backend.run), results
(softmax, result objects, JSON text). Two set-ups, timed round-robin so that the machine's other
load hits both alike:

- before: the PyTorch backend, the torchvision eval transform as it was, CenterFace on the whole
  frame (its input is the photo itself up to 1024 px) with ONNX Runtime's default thread pool.
- after: ONNX Runtime on the derived ONNX form, the PIL + numpy eval transform, CenterFace on the
  working copy sized by the 40 px smallest face, with ``--threads`` intra-op threads.

Medians and best runs in ms. The model: --model, else the bundled one.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

STAGES = ("decode", "detect", "crop", "transform", "classify", "results")


def torchvision_eval(spec):
    """The eval transform before it moved to PIL + numpy (tests/test_serving_transforms.py proves them equal)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    size = int(spec.image_size)
    steps = [T.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=True)]
    if spec.color_mode == "grayscale":
        steps.append(T.Grayscale(num_output_channels=3))
    steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(spec.mean), list(spec.std))]
    compose = T.Compose(steps)
    return lambda crop: compose(crop).numpy()


def setups(model: Path, threads: int):
    from face_emotion.faces import create_detector
    from face_emotion.inference.loading import open_backend
    from face_emotion.inference.predictor import Predictor

    before = Predictor(open_backend(model, "pytorch", num_threads=threads),
                       create_detector("centerface", min_face=26))  # 26 / 26: never shrunk, as before
    before.transform = torchvision_eval(before.spec.preprocess)
    after = Predictor(open_backend(model, num_threads=threads),
                      create_detector("centerface", num_threads=threads))
    return {"before": before, "after": after}


def one_request(predictor, data: bytes) -> dict[str, float]:
    from face_emotion.imageio import decode_image
    from face_emotion.inference.backends import softmax
    from face_emotion.inference.results import FacePrediction

    times, clock = {}, time.perf_counter
    start = clock()
    image = decode_image(data)
    times["decode"] = clock() - start
    start = clock()
    found = predictor.detector.detect(image)
    times["detect"] = clock() - start
    start = clock()
    faces = predictor.crops(image, found)
    times["crop"] = clock() - start
    start = clock()
    batch = predictor.batch([face.crop for face in faces]) if faces else None
    times["transform"] = clock() - start
    start = clock()
    logits = predictor.backend.run(batch) if faces else None
    times["classify"] = clock() - start
    start = clock()
    if faces:
        probs = softmax(logits, predictor.spec.temperature)
        results = [FacePrediction(box=face.box, score=face.score, emotion=predictor.classes[int(row.argmax())],
                                  confidence=float(row.max()),
                                  probabilities={c: float(p) for c, p in zip(predictor.classes, row)})
                   for face, row in zip(faces, probs)]
        json.dumps({"faces": [r.to_dict() for r in results]})
    times["results"] = clock() - start
    return {k: 1000.0 * v for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run folder or .safetensors (default: the bundled model)")
    parser.add_argument("--image", help="photo (default: skimage's astronaut)")
    parser.add_argument("--image-side", type=int, default=320, help="resize to this longest side (0: keep)")
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the 'after' set-up")
    args = parser.parse_args(argv)

    from PIL import Image

    from face_emotion.models.files import resolve_model

    if args.image:
        image = Image.open(args.image).convert("RGB")
    else:
        from skimage import data

        image = Image.fromarray(data.astronaut())
    if args.image_side and max(image.size) != args.image_side:
        scale = args.image_side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    data_bytes = buffer.getvalue()
    model = resolve_model(args.model)

    predictors = setups(model, args.threads)
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in predictors}
    for predictor in predictors.values():  # warm-up
        one_request(predictor, data_bytes)
    for _ in range(args.repeat):
        for name, predictor in predictors.items():
            timings[name].append(one_request(predictor, data_bytes))

    faces = {name: len(p.predict(image)) for name, p in predictors.items()}
    print(f"Image {image.width}x{image.height} JPEG ({len(data_bytes) / 1024:.0f} kB); model {model} "
          f"({predictors['after'].spec.architecture}, {predictors['after'].spec.preprocess.image_size} px); "
          f"faces found {faces}; {args.repeat} runs, round-robin.\n")
    print("| stage | before median ms | after median ms | before best | after best | after / before (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for stage in (*STAGES, "total"):
        rows = {}
        for name in predictors:
            values = [sum(t.values()) if stage == "total" else t[stage] for t in timings[name]]
            rows[name] = (statistics.median(values), min(values))
        ratio = rows["after"][0] / rows["before"][0] if rows["before"][0] else float("nan")
        print(f"| {stage} | {rows['before'][0]:.2f} | {rows['after'][0]:.2f} | {rows['before'][1]:.2f} | "
              f"{rows['after'][1]:.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
