"""How far behind a live stream `face-emotion watch` runs, measured from outside its process.

    python benchmarks/stream_latency.py [CLIP] [--seconds 18] [--model M] [--threads N]

The clip (default: the shared two-face clip) is looped to about --seconds, encoded once as
MPEG-TS (H.264, no B-frames) and served live over HTTP on loopback at its own pace
(face_emotion.video.replay). Each run starts `face-emotion watch URL --json` as a user would;
this script timestamps every line as it arrives and compares it with when the server sent that
frame's bytes (both on the system's monotonic clock):

    behind_s = line arrived - (stream started + the line's time_s)

Three runs on fresh streams: a bare PyAV decoder in this process (the floor: what demuxing and
decoding alone cost), `watch` (newest frame, frames dropped when behind), and `watch
--every-frame` (no frame dropped: it falls behind instead). Goals: at least 25 analysed frames
per second of stream, latency_ms p50 at most 40 ms, lines at most 0.25 s behind (p95), two
track ids covering at least 90 % of the faces. The machine's load average is printed with each
run: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "videos" / "two-faces.mp4"


def percentile(values, q: float) -> float | None:
    return None if not values else float(np.percentile(np.asarray(values, dtype=float), q))


def bare_decoder(url: str, server) -> dict:
    """PyAV alone, as LiveSource opens a network stream: how far behind decoding itself runs."""
    import av

    behind = []
    container = av.open(url, options={"fflags": "nobuffer"}, timeout=(10, 10))
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    first = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
    try:
        for frame in container.decode(stream):
            first = frame.time if first is None else first
            behind.append(time.monotonic() - (server.started + frame.time - first))
    except (av.error.FFmpegError, OSError):
        pass  # the end of a live HTTP stream
    container.close()
    return {"run": "bare decoder", "frames": len(behind), "behind_p50_s": percentile(behind, 50),
            "behind_p95_s": percentile(behind, 95)}


def watch_run(name: str, url: str, server, seconds: float, extra: list[str]) -> dict:
    """`face-emotion watch URL --json`, its lines timestamped on arrival."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "face_emotion", "watch", url, "--json", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    arrivals: list[tuple[float, dict]] = []

    def read() -> None:
        for line in process.stdout:
            arrivals.append((time.monotonic(), json.loads(line)))

    reader = threading.Thread(target=read)
    reader.start()
    process.wait(timeout=seconds + 300)
    reader.join()
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"{name}: watch failed ({process.returncode}): {stderr.strip()}")
    lines = [line for _, line in arrivals]
    behind = [at - (server.started + line["time_s"]) for at, line in arrivals]
    faces = [face["track_id"] for line in lines for face in line["faces"]]
    top_two = sum(count for _, count in Counter(t for t in faces if t is not None).most_common(2))
    return {
        "run": name, "frames": len(lines),
        "analysed_per_stream_s": len(lines) / seconds,
        "latency_p50_ms": percentile([line["latency_ms"] for line in lines], 50),
        "latency_p95_ms": percentile([line["latency_ms"] for line in lines], 95),
        "behind_p50_s": percentile(behind, 50), "behind_p95_s": percentile(behind, 95),
        "dropped": lines[-1]["dropped"] if lines else None,
        "track_ids": len({t for t in faces if t is not None}),
        "two_ids_cover": top_two / len(faces) if faces else None,
        "last_line": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", nargs="?", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--seconds", type=float, default=18.0, help="loop the clip to about this long")
    parser.add_argument("--model", help="passed to watch --model")
    parser.add_argument("--threads", type=int, help="passed to watch --threads")
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from face_emotion.video.replay import LiveServer, clip_frames, encode_ts

    frames, fps = clip_frames(args.clip)
    loops = max(1, round(args.seconds / (len(frames) / fps)))
    data, chunks, seconds = encode_ts(frames, fps, loops=loops)
    extra = (["--model", args.model] if args.model else []) + (["--threads", str(args.threads)] if args.threads else [])
    print(f"{args.clip.name}: {len(frames)} frames at {fps:g} fps, looped {loops}x = {seconds:.1f} s of live "
          f"MPEG-TS over HTTP on loopback; {os.cpu_count()} CPUs", flush=True)
    results = []
    for name, run in (("bare decoder", None), ("watch", []), ("watch --every-frame", ["--every-frame"])):
        load_before = os.getloadavg()[0]
        with LiveServer(data, chunks) as server:
            if run is None:
                result = bare_decoder(server.url(), server)
            else:
                result = watch_run(name, server.url(), server, seconds, [*run, *extra])
        result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
        results.append(result)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
    live = results[1]
    goals = {
        "analysed frames per stream second >= 25": live["analysed_per_stream_s"] >= 25,
        "latency_ms p50 <= 40": (live["latency_p50_ms"] or 1e9) <= 40,
        "behind p95 <= 0.25 s": (live["behind_p95_s"] or 1e9) <= 0.25,
        "two track ids cover >= 90 % of faces": (live["two_ids_cover"] or 0) >= 0.9,
    }
    for goal, met in goals.items():
        print(f"{'met' if met else 'MISSED'}: {goal}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"clip": str(args.clip), "seconds": seconds, "runs": results,
                                             "goals": goals}, indent=1) + "\n")


if __name__ == "__main__":
    main()
