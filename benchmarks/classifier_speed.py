"""The bundled classifier's time per face: ONNX Runtime fp32 (and int8), batch 1.

    python benchmarks/classifier_speed.py [--model M] [--repeat 200] [--threads 1]

Target (issue 9): at most 15 ms per face for ONNX fp32 at batch 1. The fp32 and int8 files are
exported from the model by the project's own export (checked against PyTorch), and timed
round-robin so that background load hits both alike; medians and best runs are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from face_emotion.inference.backends import OnnxRuntimeBackend
    from face_emotion.inference.export import export_onnx
    from face_emotion.models.files import resolve_model
    from face_emotion.models.store import read_spec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    source = resolve_model(args.model)
    spec = read_spec(source)
    size = int(spec.preprocess.image_size)
    batch = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        backends = {}
        for name, int8 in (("onnx fp32", False), ("onnx int8", True)):
            path = Path(tmp) / f"{name.replace(' ', '-')}.onnx"
            export_onnx(source, path, int8=int8, check_samples=2, num_threads=args.threads)
            backends[name] = OnnxRuntimeBackend(path, num_threads=args.threads)
        times: dict[str, list[float]] = {name: [] for name in backends}
        for backend in backends.values():
            for _ in range(10):
                backend.run(batch)  # warm-up
        for _ in range(args.repeat):
            for name, backend in backends.items():
                start = time.perf_counter()
                backend.run(batch)
                times[name].append((time.perf_counter() - start) * 1000)
    print(f"{spec.name} ({spec.architecture}, {size} px), batch 1, {args.threads} thread(s), {args.repeat} runs")
    for name, values in times.items():
        print(f"  {name}: median {statistics.median(values):.2f} ms, best {min(values):.2f} ms per face")


if __name__ == "__main__":
    main()
