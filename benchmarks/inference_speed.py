"""Time each inference stage for PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8.

    python benchmarks/inference_speed.py [IMAGE] [--repeat 10] [--threads N]

Stages: decode (bytes -> RGB image), detect (default face detector), crop + transform (faces ->
the float batch), model (backend.run) at batch 1 and 8. The model is ResNet-50 at 224 px with
random weights (speed does not depend on the weights), saved and exported through the project's
own store and export modules.

Model time is also shown as a ratio to this machine's fp32 floor: ResNet-50 at 224 px is about
8.2 GFLOP per image, and the floor is 8.2e9 / (SGEMM FLOP/s measured in this same run, with the
same thread count) -- the time the network would take if every layer ran at matrix-multiply
speed. Targets: ONNX Runtime fp32 within 1.25x the floor, int8 under 0.6x.

Shared machines are noisy: backends are timed round-robin with an SGEMM after every model run,
so a burst of background load hits the models and the floor alike; medians are compared with
the median floor and best runs with the best floor.

On a machine whose cores are busy with other work, OpenMP's spin-waiting makes PyTorch's
multi-threaded small ops (the eval transform, batch-1 inference) many times slower; compare a
run with OMP_WAIT_POLICY=PASSIVE in the environment.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The tests' model builder: tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.models import make_tiny_model  # noqa: E402

RESNET50_FLOP = 8.2e9  # multiply-adds x 2, 224 x 224 input
NOMINAL_FLOOR_MS = 57.0  # ENVIRONMENT.md: 145 GFLOP/s SGEMM measured on these machines
CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


SGEMM_N = 1024


def sgemm_timer(threads: int):
    """A callable timing one float32 SGEMM_N x SGEMM_N matmul (torch, ``threads`` threads)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(SGEMM_N, SGEMM_N), torch.randn(SGEMM_N, SGEMM_N)
    torch.mm(a, b)
    return lambda: _timed(lambda: torch.mm(a, b))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build_model(work: Path) -> Path:
    """A random-weight ResNet-50 at 224 px (speed does not depend on the weights)."""
    return make_tiny_model(work / "run", CLASSES, 224, "resnet50", temperature=1.0, name="benchmark-resnet50") \
        / "model.safetensors"


def load_image_bytes(path: str | None) -> tuple[bytes, str]:
    if path:
        return Path(path).read_bytes(), path
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "skimage astronaut (512x512, JPEG q90)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?", help="photo to time decode/detect/crop on (default: skimage astronaut)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per measurement (after warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: every CPU available)")
    parser.add_argument("--calibration", help="folder of face crops for int8 calibration (default: synthetic)")
    args = parser.parse_args()

    import torch

    from face_emotion.imageio import decode_image
    from face_emotion.inference.backends import OnnxRuntimeBackend, PyTorchBackend, available_cpus
    from face_emotion.inference.export import export_onnx
    from face_emotion.inference.predictor import Predictor

    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)
    data, image_name = load_image_bytes(args.image)

    with tempfile.TemporaryDirectory(prefix="face-emotion-bench-") as tmp:
        work = Path(tmp)
        print("building ResNet-50 (random weights) and exporting it (fp32, int8) ...", file=sys.stderr)
        model_path = build_model(work)
        fp32 = export_onnx(model_path, work / "model.onnx", num_threads=threads)
        int8 = export_onnx(model_path, work / "model.int8.onnx", int8=True, num_threads=threads,
                           calibration_dir=args.calibration)
        backends = {
            "pytorch fp32": PyTorchBackend(model_path, num_threads=threads),
            "onnxruntime fp32": OnnxRuntimeBackend(fp32.output, num_threads=threads),
            "onnxruntime int8": OnnxRuntimeBackend(int8.output, num_threads=threads),
        }

        predictor = Predictor(backends["pytorch fp32"])  # its crop and transform steps, timed alone
        try:
            from face_emotion.faces import create_detector

            detector = create_detector()
            detector_name = detector.name
        except Exception as error:  # the stage is reported as missing rather than failing the run
            detector, detector_name = None, f"unavailable ({error})"

        # ---- per-image stages (backend independent)
        image = decode_image(data)
        faces = detector.detect(image) if detector else []

        def crop_and_transform():
            crops = predictor.crops(image, faces) if faces else predictor.faces(image, detect=False)
            return predictor.batch([c.crop for c in crops])

        stage_times: dict[str, list[float]] = {"decode": [], "detect": [], "crop + transform": []}
        for i in range(args.repeat + 2):
            timings = {
                "decode": _timed(lambda: decode_image(data)),
                "detect": _timed(lambda: detector.detect(image)) if detector else float("nan"),
                "crop + transform": _timed(crop_and_transform),
            }
            if i >= 2:  # warm-up runs are not counted
                for key, value in timings.items():
                    stage_times[key].append(value)

        # ---- model, round-robin over backends, with an SGEMM in every round: the floor is
        # measured under the same background load as the models it is compared with.
        crop_batch = crop_and_transform()
        batches = {1: crop_batch[:1], 8: np.repeat(crop_batch[:1], 8, axis=0)}
        model_times: dict[tuple[str, int], list[float]] = {(name, b): [] for name in backends for b in batches}
        sgemm = sgemm_timer(threads)
        sgemm_times: list[float] = []
        for i in range(args.repeat + 2):
            for size, batch in batches.items():
                for name, backend in backends.items():
                    elapsed = _timed(functools.partial(backend.run, batch))
                    if i >= 2:
                        model_times[(name, size)].append(elapsed / size)
                    sgemm_sample = sgemm()
                    if i >= 2:
                        sgemm_times.append(sgemm_sample)

    flop = 2.0 * SGEMM_N**3
    flops_median, flops_best = flop / statistics.median(sgemm_times), flop / min(sgemm_times)
    floor_median_ms = RESNET50_FLOP / flops_median * 1e3
    floor_best_ms = RESNET50_FLOP / flops_best * 1e3
    print()
    print(f"image: {image_name}; faces found: {len(faces)} (detector: {detector_name})")
    print(f"threads: {threads}; SGEMM (torch.mm {SGEMM_N}x{SGEMM_N} fp32, {len(sgemm_times)} runs interleaved with "
          f"the models): median {flops_median / 1e9:.0f} GFLOP/s, best {flops_best / 1e9:.0f} GFLOP/s")
    print(f"ResNet-50 fp32 floor (8.2 GFLOP / SGEMM rate): {floor_median_ms:.1f} ms/image at the median rate, "
          f"{floor_best_ms:.1f} ms at the best (nominal for these machines: {NOMINAL_FLOOR_MS:.0f} ms at 145 GFLOP/s)")
    print(f"export check: fp32 max |dp| {fp32.fp32_max_abs_prob_diff:.1e}; int8 {int8.quantization}; "
          f"int8 top-1 agreement {int8.int8_top1_agreement:.0%} on {int8.int8_check_inputs} images "
          f"(calibration: {int8.calibration}); "
          f"sizes {fp32.output_bytes / 1e6:.1f} MB -> {int8.output_bytes / 1e6:.1f} MB")
    print()
    print("| stage | backend | batch | median ms/image | best ms/image | median / median floor | best / best floor |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for stage, values in stage_times.items():
        if values and not np.isnan(values[0]):
            print(f"| {stage} | - | 1 | {statistics.median(values) * 1e3:.1f} | {min(values) * 1e3:.1f} | | |")
        else:
            print(f"| {stage} | - | 1 | n/a | n/a | | |")
    for (name, size), values in model_times.items():
        median, best = statistics.median(values) * 1e3, min(values) * 1e3
        print(f"| model | {name} | {size} | {median:.1f} | {best:.1f} | {median / floor_median_ms:.2f}x | "
              f"{best / floor_best_ms:.2f}x |")
    print()
    ort8 = statistics.median(model_times[("onnxruntime fp32", 8)]) * 1e3 / floor_median_ms
    int8_8 = statistics.median(model_times[("onnxruntime int8", 8)]) * 1e3 / floor_median_ms
    print(f"targets (batch 8, median): onnxruntime fp32 {ort8:.2f}x floor (target <= 1.25x: "
          f"{'met' if ort8 <= 1.25 else 'missed'}); "
          f"int8 {int8_8:.2f}x (target < 0.6x: {'met' if int8_8 < 0.6 else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
