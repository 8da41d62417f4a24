"""CenterFace, profiled: time by input size and thread count, int8 against fp32, smallest face found.

    python benchmarks/detector_profile.py [--repeat 15] [--seeds 20]

1. Time of one detector run (ONNX Runtime, the project's session set-up) for square inputs from
   128 to 1024 px, with 1 and 2 intra-op threads: best and median ms.
2. int8: the graph converted to opset 13 and statically quantised (QDQ, per-channel s8 weights with
   reduce_range, u8 activations, MinMax on four skimage photos), timed against fp32 at 224 px, with
   the largest heat-map difference on the astronaut.
3. The narrowest face found: skimage's astronaut pasted at random places on smooth random
   backgrounds (480x360, no shrinking) with her face box W px wide; how many of --seeds are found.
   This is what RELIABLE_FACE_PX in faces/centerface_detector.py rests on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ASTRONAUT_FACE_XYWH = (182, 58, 88, 120)


def timed(run, blob, repeat: int) -> tuple[float, float]:
    run(blob)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(blob)
        times.append(1000.0 * (time.perf_counter() - start))
    return min(times), statistics.median(times)


def sizes_and_threads(repeat: int) -> None:
    from face_emotion.faces.centerface_detector import OnnxRuntimeRunner, default_model_path

    model = default_model_path().read_bytes()
    runners = {threads: OnnxRuntimeRunner(model, threads) for threads in (1, 2)}
    print("| input px | 1 thread best / median ms | 2 threads best / median ms |")
    print("|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for side in (128, 160, 192, 224, 256, 320, 416, 512, 640, 1024):
        blob = (rng.random((1, 3, side, side)) * 255).astype(np.float32)
        cells = [timed(runners[t], blob, repeat) for t in (1, 2)]
        print(f"| {side} | " + " | ".join(f"{best:.1f} / {median:.1f}" for best, median in cells) + " |")


def int8_against_fp32(repeat: int) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import version_converter
    from onnx.tools.update_model_dims import update_inputs_outputs_dims
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from skimage import data

    from face_emotion.faces.centerface_detector import OUTPUT_NAMES, default_model_path

    ort.set_default_logger_severity(3)  # the old exporter's unused initializers warn by the dozen
    graph = onnx.load(str(default_model_path()))
    weights = {w.name for w in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in weights]
    del graph.graph.input[:]
    graph.graph.input.extend(inputs)
    graph = update_inputs_outputs_dims(graph, {"input.1": ["b", 3, "h", "w"]},
                                       {n: ["b", c, "gh", "gw"] for n, c in zip(OUTPUT_NAMES, (1, 2, 2, 10))})
    graph = version_converter.convert_version(graph, 13)  # per-channel QDQ needs opset >= 13
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    blobs = [np.asarray(Image.fromarray(p).convert("RGB").resize((224, 224)), np.float32).transpose(2, 0, 1)[None]
             for p in photos]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(blobs)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"input.1": item}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(graph, str(fp32))
        quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in (("fp32", fp32), ("int8", int8))}
        heat = {}
        print("\n| graph | 224 px best / median ms (1 thread) |")
        print("|---|---:|")
        for name, session in sessions.items():
            run = lambda blob, s=session: s.run(OUTPUT_NAMES, {"input.1": blob})  # noqa: E731
            best, median = timed(run, blobs[0], repeat)
            heat[name] = run(blobs[0])[0]
            print(f"| {name} | {best:.1f} / {median:.1f} |")
        print(f"\nastronaut heat map: peak fp32 {heat['fp32'].max():.3f}, int8 {heat['int8'].max():.3f}; "
              f"largest difference {np.abs(heat['fp32'] - heat['int8']).max():.3f}")


def narrowest_face(seeds: int) -> None:
    from skimage import data

    from face_emotion.faces import create_detector

    detector = create_detector("centerface", num_threads=1, min_face=1, max_side=100_000)  # never shrinks
    x, y, w, h = ASTRONAUT_FACE_XYWH
    head = Image.fromarray(data.astronaut()).crop((int(x - 0.6 * w), int(y - 0.6 * h),
                                                    int(x + 1.6 * w), int(y + 1.6 * h)))
    print("\n| face box width px | found |")
    print("|---:|---:|")
    for face_width in (14, 16, 18, 20, 22, 24, 26, 28, 32, 40):
        found = 0
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            photo = Image.fromarray(rng.uniform(30, 220, (9, 12, 3)).astype(np.uint8)).resize(
                (480, 360), Image.Resampling.BICUBIC)
            scale = face_width / w
            pasted = head.resize((round(head.width * scale), round(head.height * scale)), Image.Resampling.BILINEAR)
            photo.paste(pasted, (int(rng.integers(0, 480 - pasted.width)), int(rng.integers(0, 360 - pasted.height))))
            found += bool(detector.detect(photo))
        print(f"| {face_width} | {found}/{seeds} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args(argv)
    sizes_and_threads(args.repeat)
    int8_against_fp32(args.repeat)
    narrowest_face(args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
