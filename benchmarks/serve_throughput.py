"""Throughput of `face-emotion serve` against the original design, on this machine, in one run.

    python benchmarks/serve_throughput.py [--model RUN_DIR_OR_FILE] [--pytorch] [--compare OTHER_SRC]
        [--duration 10] [--clients 1,8] [--image PHOTO] [--image-side 320] [--workers N]

Servers (both on loopback, started here, stopped at the end):
- baseline, the original design: a minimal Flask app defined in this file, run by Flask's
  development server one request at a time (threaded=False), PyTorch ResNet-50 on the *whole*
  image at 224 px (resize 256, centre crop 224, as torchvision's classic recipe), no face detection.
- ours: `face-emotion serve` (gunicorn; gthread workers that read each request to its end first,
  server/buffering.py) with the default face detector, so it
  does more work per image, and its default backend (ONNX Runtime on the ONNX form derived from
  the model's safetensors file). Its model: --model, or a random-weight ResNet-50 made here at the
  bundled model's image size and colour mode (read from its spec), or at 64 px grayscale when
  this installation has no bundled model. --pytorch adds a row with `--backend pytorch`;
  --compare SRC adds a row served by another checkout's code (e.g. before a change), same model.

Load: closed loop; each of C clients keeps one keep-alive connection and sends the next request
as soon as the previous answer arrived, for a fixed duration (after a short warm-up). The body is
the photo as the multipart field `image`, i.e. what the page sends. Requests per second,
latency p50/p95 and errors are printed as a markdown table, with ours / baseline at each client
count. Both servers use every core; this machine is shared, so compare the ratios of one run.
The servers' CPU time per request (their process groups, from /proc) is printed too: it depends
far less on the machine's other load, and cores / CPU-per-request estimates an idle machine.
After the load, the resident memory of every server process (master and workers) is printed, and
whether torch's library is mapped into it.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# The helpers the tests use too (a server launcher, multipart bodies, tiny models): tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.models import make_tiny_model  # noqa: E402
from support.server import ServerProcess, free_port, multipart, serve_command  # noqa: E402

HERE = Path(__file__).resolve()
DEFAULT_PHOTO_NOTE = "skimage.data.astronaut() (one face)"


# ---------------------------------------------------------------------------------------------
# The original design: a minimal Flask app (run in a subprocess of this file with --baseline-server)
# ---------------------------------------------------------------------------------------------

def baseline_app():
    import numpy as np
    import torch
    import torchvision
    from flask import Flask, jsonify, request
    from PIL import Image

    network = torchvision.models.resnet50(weights=None, num_classes=7).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    classes = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    app = Flask("baseline")

    def preprocess(image: Image.Image) -> torch.Tensor:
        width, height = image.size
        scale = 256 / min(width, height)
        image = image.resize((max(224, round(width * scale)), max(224, round(height * scale))), Image.BILINEAR)
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        image = image.crop((left, top, left + 224, top + 224))
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return ((tensor - mean) / std).unsqueeze(0)

    @app.post("/predict")
    def predict():
        upload = request.files.get("image")
        data = upload.read() if upload is not None else request.get_data()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        with torch.no_grad():
            probs = torch.softmax(network(preprocess(image)), dim=1)[0]
        best = int(probs.argmax())
        return jsonify({"emotion": classes[best], "confidence": float(probs[best])})

    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    return app


def run_baseline_server(port: int) -> None:
    app = baseline_app()
    # The original design: Flask's own server, one request at a time.
    app.run(host="127.0.0.1", port=port, threaded=False, use_reloader=False)


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------

def make_server(name: str, command: Callable[[int], list[str]], log_dir: Path,
                env: dict[str, str] | None = None) -> ServerProcess:
    """A server (not started) on a free port; ``command(port)`` is its command line."""
    port = free_port()
    log_path = log_dir / (re.sub(r"[^A-Za-z0-9.-]+", "_", name) + ".log")
    return ServerProcess(command(port), port, log_path, env=env, name=name)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return sorted(pids)


def process_memory(pid: int) -> tuple[float, bool] | None:
    """(resident MB, whether libtorch is mapped) of a process; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    rss_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return rss_kb / 1024, "libtorch" in maps


def memory_report(server: ServerProcess) -> str:
    """'master 52 MB; workers 180, 182 MB; torch in: none' for a server's process group."""
    parts = []
    for pid in group_pids(server.process.pid):
        memory = process_memory(pid)
        if memory is not None:
            parts.append(("master" if pid == server.process.pid else "worker", *memory))
    masters = [f"{mb:.0f}" for role, mb, _ in parts if role == "master"]
    workers = [f"{mb:.0f}" for role, mb, _ in parts if role == "worker"]
    torch_in = [role for role, _, torch in parts if torch]
    text = f"master {', '.join(masters)} MB"
    if workers:
        text += f"; workers {', '.join(workers)} MB"
    return text + f"; torch loaded in: {', '.join(torch_in) or 'none'}"


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes in a process group (a server and its workers).

    Unlike req/s this hardly depends on what else the (shared) machine is running, so
    CPU ms per request predicts what an idle machine would do: cores / (CPU s per request).
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


# ---------------------------------------------------------------------------------------------
# Load generator
# ---------------------------------------------------------------------------------------------

@dataclass
class LoadResult:
    server: str
    clients: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    faces: int | None = None
    cpu_s: float = 0.0  # server CPU time spent during the row (warm-up and drain included)
    handled: int = 0  # requests the server answered during the row (warm-up and drain included)

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000.0 * self.cpu_s / self.handled if self.handled else float("nan")

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load(port: int, body: bytes, content_type: str, clients: int, duration_s: float, warmup_s: float,
         max_requests: int, timeout_s: float = 60.0) -> tuple[list[float], int, float, dict | None]:
    """Closed loop: each client sends, waits for the answer, sends again until the end of the window.

    Returns the latencies of the requests that *finished* inside the measured window (after the
    warm-up, before the end), the errors in it, the window in seconds and one response body.
    Requests still in flight at the end are waited for (so the next row starts on an idle server)
    but not counted."""
    start = time.monotonic()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    latencies: list[float] = []
    errors = [0]
    answered = [0]  # every answer, measured or not (for CPU time per request)
    sample: list[dict] = []
    lock = threading.Lock()
    headers = {"Content-Type": content_type, "Connection": "keep-alive"}

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        while True:
            began = time.monotonic()
            if began >= stop_at:
                break
            with lock:
                if len(latencies) >= max_requests:
                    break
            try:
                connection.request("POST", "/predict", body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                ok = response.status == 200
                if ok and not sample:
                    sample.append(json.loads(payload))
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
            ended = time.monotonic()
            with lock:
                answered[0] += 1
            if measure_from <= ended <= stop_at:
                with lock:
                    if ok:
                        latencies.append((ended - began) * 1000.0)
                    else:
                        errors[0] += 1
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup_s + duration_s + timeout_s + 5)
    window = duration_s
    return latencies, errors[0], window, (sample[0] if sample else None), answered[0]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def photo_bytes(path: str | None, side: int) -> tuple[bytes, str, tuple[int, int]]:
    from PIL import Image

    if path:
        image, note = Image.open(path).convert("RGB"), Path(path).name
    else:
        from skimage import data

        image, note = Image.fromarray(data.astronaut()), DEFAULT_PHOTO_NOTE
    if side and max(image.size) != side:
        scale = side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), note, image.size


def make_benchmark_model(out_dir: Path) -> tuple[Path, str]:
    """A random-weight ResNet-50 at the bundled model's input size (or 64 px grayscale)."""
    from face_emotion.models.files import ModelLoadError, bundled_model_path
    from face_emotion.models.store import read_spec

    try:
        bundled = read_spec(bundled_model_path())
        size, colour, classes = bundled.preprocess.image_size, bundled.preprocess.color_mode, bundled.classes
        where = f"bundled model's input: {size} px {colour}"
    except ModelLoadError:
        size, colour = 64, "grayscale"
        classes = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
        where = "no bundled model: 64 px grayscale"
    make_tiny_model(out_dir, classes, size, "resnet50", colour, temperature=1.0, name="benchmark-resnet50-random",
                    dropout=0.3)
    return out_dir, f"random ResNet-50, {where}"


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="our server's model (default: a random ResNet-50 made here)")
    parser.add_argument("--pytorch", action="store_true", help="also serve the model with --backend pytorch")
    parser.add_argument("--compare", type=Path, help="also serve the model with another checkout's src/ (e.g. main)")
    parser.add_argument("--image", help="photo to send (default: skimage's astronaut)")
    parser.add_argument("--image-side", type=int, default=320,
                        help="resize the photo to this longest side "
                             "(default 320: the page's webcam frames; 0 keeps it)")
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each row")
    parser.add_argument("--max-requests", type=int, default=5000, help="stop a row after this many requests")
    parser.add_argument("--workers", type=int, default=0, help="our gunicorn workers (default: one per core)")
    parser.add_argument("--threads", type=int, default=4, help="our threads per worker")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.baseline_server:
        run_baseline_server(args.port)
        return 0

    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    image, image_note, image_size = photo_bytes(args.image, args.image_side)
    body, content_type = multipart([("image", "photo.jpg", image)])
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.model:
        model, model_note = args.model, args.model
    else:
        model_dir, model_note = make_benchmark_model(work / "model")
        model = str(model_dir / "model.safetensors")

    servers = [make_server("baseline (Flask dev server, ResNet-50 224 px, whole image)",
                           lambda port: [sys.executable, str(HERE), "--baseline-server", "--port", str(port)], work)]
    serve = ["--threads", str(args.threads)] + (["--workers", str(args.workers)] if args.workers else [])
    servers.append(make_server("face-emotion serve", lambda port: serve_command(port, *serve, "--model", model), work))
    if args.pytorch:
        servers.append(make_server("face-emotion serve --backend pytorch",
                                   lambda port: serve_command(port, *serve, "--model", model, "--backend", "pytorch"),
                                   work))
    if args.compare:
        servers.append(make_server(f"face-emotion serve from {args.compare}",
                                   lambda port: serve_command(port, *serve, "--model", model), work,
                                   env={"PYTHONPATH": str(args.compare.resolve())}))

    results: list[LoadResult] = []
    memory: dict[str, str] = {}
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(timeout_s=180)
        # Rows of one client count run back to back, so a change in the machine's other load
        # between rows disturbs the ratios as little as possible.
        for count in clients:
            for server in servers:
                print(f"{server.name}: {count} client(s) ...", file=sys.stderr)
                cpu_before = cpu_seconds(server.process.pid)
                latencies, errors, seconds, sample, answered = load(
                    server.port, body, content_type, count, args.duration, args.warmup, args.max_requests)
                cpu = cpu_seconds(server.process.pid) - cpu_before
                faces = len(sample["faces"]) if sample and "faces" in sample else None
                results.append(LoadResult(server.name, count, seconds, latencies, errors, faces, cpu, answered))
        memory = {server.name: memory_report(server) for server in servers}
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)  # the made-up model and the server logs

    print(f"\nImage: {image_note}, {image_size[0]}x{image_size[1]} JPEG ({len(image) / 1024:.0f} kB), multipart.")
    print(f"Ours: {model_note}; CPUs: {os.cpu_count()}; {args.duration:g} s per row after {args.warmup:g} s warm-up.\n")
    order = {server.name: i for i, server in enumerate(servers)}
    results.sort(key=lambda r: (order[r.server], r.clients))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"| server | clients | requests | req/s | p50 ms | p95 ms | errors | faces found | server CPU ms/req "
          f"| req/s if {cores} idle cores |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        faces = "-" if r.faces is None else str(r.faces)
        cpu = r.cpu_ms_per_request
        print(f"| {r.server} | {r.clients} | {r.requests} | {r.rate:.1f} | {r.percentile(0.5):.0f} | "
              f"{r.percentile(0.95):.0f} | {r.errors} | {faces} | {cpu:.0f} | {1000.0 * cores / cpu:.1f} |")
    base = {r.clients: r.rate for r in results if r.server.startswith("baseline")}
    print("\nResident memory after the load:")
    for name, text in memory.items():
        print(f"- {name}: {text}")
    print()
    for r in results:
        if not r.server.startswith("baseline") and base.get(r.clients):
            base_cpu = next(b.cpu_ms_per_request for b in results
                            if b.server.startswith("baseline") and b.clients == r.clients)
            print(f"{r.server}, {r.clients} client(s): {r.rate / base[r.clients]:.2f}x the baseline's req/s; "
                  f"{base_cpu / r.cpu_ms_per_request:.2f}x less server CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
