"""Resident memory of `face-emotion serve` workers after they have drawn heatmaps.

    python benchmarks/worker_memory.py [--model M] [--workers 2] [--requests 12] [--limit-mb 500]

Starts a real server (gunicorn, ``--workers`` processes), sends ``--requests`` POST
/predict?explain=1 of a real face (skimage's astronaut) from two client threads so that every
worker draws heatmaps, then reads each worker's VmRSS from /proc and whether libtorch is mapped
in it. Exit status 1 when a worker is above ``--limit-mb`` (the target: 500 MB), or torch is in a
worker. Before heatmaps ran on ONNX Runtime (occlusion), one heatmap left Grad-CAM's torch in the
worker: 1.53 GB and 1.28 GB resident against 0.2 GB without.
"""

from __future__ import annotations

import argparse
import http.client
import io
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import group_pids, process_memory  # noqa: E402

from support.server import ServerProcess, free_port, serve_command  # noqa: E402


def astronaut_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(port: int, body: bytes) -> tuple[int, bool]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/predict?explain=1", body=body, headers={"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        payload = response.read()
        return response.status, b"heatmap_png" in payload
    finally:
        connection.close()


def worker_memory(server: ServerProcess) -> list[tuple[int, float, bool]]:
    """(pid, resident MB, torch mapped) of each worker (the master left out)."""
    rows = []
    for pid in group_pids(server.pid):
        memory = process_memory(pid) if pid != server.pid else None
        if memory is not None:
            rows.append((pid, *memory))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model (default: the bundled one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--limit-mb", type=float, default=500.0)
    args = parser.parse_args()

    options = ["--workers", str(args.workers), "--threads", "2", "--inference-threads", "1"]
    if args.model:
        options += ["--model", args.model]
    body = astronaut_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = ServerProcess(serve_command(port, *options), port, Path(tmp) / "serve.log", name="serve")
        with server.start(timeout_s=600):
            before = worker_memory(server)
            answers: list[tuple[int, bool]] = []

            def client(count: int) -> None:
                for _ in range(count):
                    answers.append(post(port, body))

            threads = [threading.Thread(target=client, args=(n,))
                       for n in (args.requests // 2, args.requests - args.requests // 2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after = worker_memory(server)
    ok = sum(1 for status, heat in answers if status == 200 and heat)
    print(f"{ok} of {len(answers)} POST /predict?explain=1 answered 200 with heatmaps")
    print("worker  before (MB)  after heatmaps (MB)  torch loaded")
    start = dict((pid, mb) for pid, mb, _ in before)
    for pid, mb, torch_in in after:
        print(f"{pid:>6}  {start.get(pid, float('nan')):>11.0f}  {mb:>19.0f}  {'yes' if torch_in else 'no'}")
    worst = max((mb for _, mb, _ in after), default=0.0)
    failed = ok < len(answers) or worst > args.limit_mb or any(t for _, _, t in after)
    print(f"largest worker {worst:.0f} MB; limit {args.limit_mb:.0f} MB: {'FAIL' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
