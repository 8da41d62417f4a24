"""How fast a clip is analysed, per stage, against the clip's own playing time.

    python benchmarks/video_speed.py [CLIP] [--seconds 10] [--threads N] [--model M] [--repeat 2] [--pytorch]

Without CLIP, a 600x336 clip at 30 fps is generated (two real faces from skimage's astronaut
moving across a background), the size the target is stated for: at the default settings the
analysis must keep up with playback on two cores (real-time factor >= 1.0).

Each configuration is run on the same clip in one process, round-robin (``--repeat`` times),
so a burst of background load on a shared machine hits them alike; the best run of each is
reported, with the CPU seconds it used per second of clip (on a machine shared with other jobs,
below 2 means two free cores would keep up). Configurations: the defaults (detect every 0.2 s,
follow faces by optical flow in between, classify every frame, batched across frames), and
detection on every frame (what the pipeline would cost without following). Per stage: seconds,
frames/s (analysed frames over that stage's time) and the real-time factor that stage alone
would allow. Decoding runs ahead on its
own thread, so "decode" is the time the analysis waited for frames. "predict --json" is the CLI
verb's own clip path (commands.predict_video.run_clip, JSON lines written to nowhere) with the
predictor every verb opens (ONNX Runtime by default); ``--pytorch`` adds the defaults on PyTorch.

On cores busy with other work, OpenMP spin-waiting slows PyTorch's small ops badly; compare runs
with OMP_WAIT_POLICY=PASSIVE or --threads 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_clip(path: Path, seconds: float, fps: int = 30) -> Path:
    from PIL import Image

    from support.clips import astronaut_face, render, write_clip

    face = astronaut_face(110)
    other = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    count = int(seconds * fps)
    t = np.arange(count) / fps

    def placements(i):
        # Two faces swaying and drifting as people on a call do, never leaving the picture.
        return [(face, int(120 + 60 * np.sin(t[i] * 0.9)), int(60 + 25 * np.sin(t[i] * 1.7))),
                (other, int(380 + 50 * np.sin(t[i] * 1.1 + 1)), int(90 + 30 * np.sin(t[i] * 1.3 + 2)))]

    return write_clip(path, render((600, 336), count, placements, background=(150, 140, 120)), fps)


def run_once(predictor, clip: Path, options):
    from face_emotion.video import VideoAnalyser, VideoSource

    analyser = VideoAnalyser(predictor, options)
    start, cpu = time.perf_counter(), time.process_time()
    with VideoSource(clip) as video:
        duration = video.info.duration_s or (video.info.frames / video.info.fps)
        for _ in analyser.run(video):
            pass
    analyser.times.extra["cpu_s"] = time.process_time() - cpu
    return time.perf_counter() - start, duration, analyser.times


CLI = "cli"  # marker: run the clip through the CLI verb's own path


def run_cli_once(predictor, clip: Path):
    """commands.predict_video.run_clip as `predict CLIP --json` runs it (lines written to nowhere):
    (seconds, clip duration, frames analysed)."""
    from face_emotion.commands.predict_video import VideoOutputs, run_clip
    from face_emotion.video import VideoOptions, VideoSource

    with VideoSource(clip) as video:
        duration = video.info.duration_s or (video.info.frames / video.info.fps)
    outputs = VideoOutputs(as_json=True)
    start, cpu = time.perf_counter(), time.process_time()
    ok, _ = run_clip(predictor, clip, Path(clip.name), VideoOptions(), outputs, set(), lambda line: None)
    wall = time.perf_counter() - start
    if not ok:
        raise SystemExit(f"the CLI could not read {clip}")
    return wall, duration, (outputs.summaries[-1]["frames_analysed"], time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", nargs="?", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the generated clip")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: every CPU)")
    parser.add_argument("--model", default=None, help="model (default: the bundled one)")
    parser.add_argument("--backend", default=None, choices=["pytorch", "onnxruntime"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--pytorch", action="store_true", help="also run the defaults with --backend pytorch")
    args = parser.parse_args()

    from face_emotion.inference.predictor import Predictor
    from face_emotion.video import VideoOptions, VideoSource

    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or make_clip(Path(tmp) / "bench.mp4", args.seconds)
        with VideoSource(clip) as video:
            info = video.info
        print(f"clip: {clip if args.clip else 'generated'} {info.width}x{info.height} {info.fps:.2f} fps, "
              f"{info.frames} frames, {info.duration_s:.2f} s")
        predictor = Predictor.load(args.model, backend=args.backend, num_threads=args.threads)
        print(f"model: {predictor.spec.name} on {predictor.backend_name}, detector {predictor.detector_name}, "
              f"threads {args.threads or 'default'}")
        configs = {"defaults": (predictor, VideoOptions()),
                   "detect every frame": (predictor, VideoOptions(detect_interval_s=0.0))}
        configs["predict --json (the CLI's clip path)"] = (predictor, CLI)
        if args.pytorch:
            eager = Predictor.load(args.model, backend="pytorch", num_threads=args.threads)
            configs["defaults, pytorch"] = (eager, VideoOptions())
        for runner, options in configs.values():  # warm-up: lazy imports, first allocations
            if options is not CLI:
                run_once(runner, clip, VideoOptions(sample_fps=2))
        print(f"\nthe clip lasts {info.duration_s:.2f} s; real-time factor = clip seconds / analysis seconds")
        best: dict[str, tuple] = {}
        for _ in range(args.repeat):
            for name, (runner, options) in configs.items():
                if options is CLI:
                    wall, duration, frames = run_cli_once(runner, clip)
                    if name not in best or wall < best[name][0]:
                        best[name] = (wall, duration, frames)
                    continue
                wall, duration, times = run_once(runner, clip, options)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, duration, times)
        for name, (wall, duration, times) in best.items():
            if isinstance(times, tuple):  # the CLI's path: one figure
                frames, cpu = times
                print(f"\n{name}: {frames} frames in {wall:.2f} s = {frames / wall:.1f} frames/s, "
                      f"real-time factor {duration / wall:.2f}x; {cpu / duration:.2f} CPU s per clip s")
                continue
            frames = times.frames_analysed
            print(f"\n{name}: {frames} frames in {wall:.2f} s = {frames / wall:.1f} frames/s, "
                  f"real-time factor {duration / wall:.2f}x ({times.detections} detections); "
                  f"{times.extra['cpu_s'] / duration:.2f} CPU s per clip s")
            print(f"  {'stage':<10}{'seconds':>9}{'frames/s':>10}{'x real time':>13}")
            for stage, seconds in times.stages().items():
                rate = frames / seconds if seconds > 0 else float("inf")
                factor = duration / seconds if seconds > 0 else float("inf")
                print(f"  {stage:<10}{seconds:>9.2f}{rate:>10.1f}{factor:>13.2f}")
            print(f"  (decode and classify run on threads of their own, so the stages add up to more than the "
                  f"{wall:.2f} s)")
        base = best["detect every frame"][0]
        print(f"\nfollowing between detections: {base / best['defaults'][0]:.2f}x faster than detecting every frame")


if __name__ == "__main__":
    main()
