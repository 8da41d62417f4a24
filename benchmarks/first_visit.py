"""The on-device page's first visit: bytes on the wire and time to the first answer, in Chromium.

    python benchmarks/first_visit.py [--compare OTHER_SRC] [--photo PHOTO] [--model M] [--workers N]
                                     [--weights light|exact]

Opens ``/?device=local`` of a `face-emotion serve` (gunicorn, default workers) from this
checkout's src/ -- and with --compare from another checkout's src/ too (the code before a change),
one after the other in the same run -- in a real headless Chromium (/usr/bin/chromium, the flags
the browser tests use), chooses a photo (default: skimage's astronaut) and waits for its answer.
Twice, in one browser profile: the first visit starts with an empty cache, the second reopens
the page with what the first left in it; then once more with a new profile, to the server
restarted (what it kept in its cache folder kept too).

Reported per visit: bytes on the wire (response headers and bodies as received, so gzip counts
as sent; a response from the browser's cache counts 0), by type (runtime: onnxruntime-web's
files; models: the ONNX files; page: everything else), the number of requests (and how many the
cache answered or the server answered 304), the time until the page says the models are
running, and until the photo's answer is drawn (both from the start of navigation), and the
longest any one response took (request to last byte). The server starts with an empty cache
folder (but for the derived ONNX files), so the very first visit also pays for the server's
one-off work (gzip forms, kept in that folder; the light model files, made per worker); the
first visit to a restarted server is the common case. /proc/loadavg is printed before each
server start: the machine is shared, so times are only comparable within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from support.server import ServerProcess, free_port, serve_command  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
CHROMIUM = Path(os.environ.get("FACE_EMOTION_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def start_server(src: Path, model: str | None, workers: int, cache: Path) -> ServerProcess:
    """`face-emotion serve` from ``src`` with the cache folder ``cache``."""
    port = free_port()
    options = (["--model", model] if model else []) + (["--workers", str(workers)] if workers else [])
    server = ServerProcess(serve_command(port, *options), port, cache / f"serve-{port}.log",
                           env={"PYTHONPATH": str(src), "FACE_EMOTION_CACHE": str(cache)},
                           name=f"the server from {src}")
    return server.start(timeout_s=600)


def fresh_cache(scratch: Path) -> Path:
    """A cache folder with only the derived ONNX files of the user's cache (deriving needs torch, and a
    minute): everything else the server keeps there (gzip forms) is made afresh."""
    from face_emotion.cache import cache_path

    cache = Path(tempfile.mkdtemp(dir=scratch))
    if cache_path("onnx").is_dir():
        (cache / "onnx").symlink_to(cache_path("onnx"))
    return cache


def kind_of(path: str) -> str:
    if "onnxruntime-web" in path or "/model-files/runtime/" in path:
        return "runtime"
    if path.endswith(".onnx"):
        return "models"
    return "page"


class Wire:
    """Every response of a page, and the bytes each took on the wire (Chrome DevTools Protocol)."""

    def __init__(self, context, page):
        self.rows: dict[str, dict] = {}
        session = context.new_cdp_session(page)
        session.send("Network.enable")
        session.on("Network.responseReceived", self._response)
        # The status as it came over the wire: a revalidated file is reported as the cached 200.
        session.on("Network.responseReceivedExtraInfo",
                   lambda e: self._row(e["requestId"]).update(wire_status=e.get("statusCode", 0)))
        session.on("Network.requestServedFromCache", lambda e: self._row(e["requestId"]).update(cached=True))
        session.on("Network.requestWillBeSent", lambda e: self._row(e["requestId"]).update(sent=e["timestamp"]))
        session.on("Network.loadingFinished", lambda e: self._row(e["requestId"]).update(
            wire=e["encodedDataLength"], done=True, took=e["timestamp"] - self._row(e["requestId"])["sent"]))
        self.session = session

    def _row(self, request_id: str) -> dict:
        return self.rows.setdefault(request_id, {"url": "", "status": 0, "wire_status": 0, "wire": 0, "sent": 0.0,
                                                 "took": 0.0, "cached": False, "done": False, "encoding": ""})

    def _response(self, event):
        response = event["response"]
        row = self._row(event["requestId"])
        headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
        row.update(url=response["url"], status=response["status"], encoding=headers.get("content-encoding", ""),
                   cached=row["cached"] or response.get("fromDiskCache", False)
                   or response.get("fromPrefetchCache", False))

    def summary(self, origin: str) -> dict:
        totals, counts, slowest = defaultdict(int), defaultdict(int), (0.0, "")
        for row in self.rows.values():
            if not row["url"].startswith(origin):
                continue
            path = row["url"][len(origin):].split("?")[0]
            kind = kind_of(path)
            wire = 0 if row["cached"] else row["wire"]
            totals[kind] += wire
            counts["requests"] += 1
            counts["from cache"] += row["cached"]
            counts["304"] += row["wire_status"] == 304
            counts["gzip"] += row["encoding"] == "gzip"
            slowest = max(slowest, (row["took"], path.rsplit("/", 1)[-1]))
        return {"bytes": dict(totals), "total": sum(totals.values()), "slowest": slowest, **counts}


def visit(context, origin: str, photo: Path, weights: str) -> dict:
    page = context.new_page()
    wire = Wire(context, page)
    query = "?device=local" + ("&weights=exact" if weights == "exact" else "")
    start = time.perf_counter()
    page.goto(origin + "/" + query)
    page.locator("#device-status").filter(has_text="Running in this browser").wait_for(timeout=300_000)
    ready = time.perf_counter() - start
    page.set_input_files("#file-input", str(photo))
    page.click("#predict-button")
    page.locator(".face-box").first.wait_for(timeout=300_000)
    answered = time.perf_counter() - start
    status = page.locator("#status").inner_text()
    page.wait_for_timeout(500)  # the last loadingFinished events
    summary = wire.summary(origin)
    page.close()
    return {**summary, "ready_s": ready, "answer_s": answered, "status": status}


def measure(src: Path, args, photo: Path, scratch: Path) -> list[tuple[str, dict]]:
    """A first and a second visit to a server with a fresh cache folder, then a first visit (a new
    browser profile) to a restarted server that keeps that folder."""
    from playwright.sync_api import sync_playwright

    cache = fresh_cache(scratch)
    visits = []
    with sync_playwright() as playwright:
        for names in (("first", "second"), ("first, server restarted",)):
            print(f"{src}: /proc/loadavg {Path('/proc/loadavg').read_text().strip()}", flush=True)
            server = start_server(src, args.model, args.workers, cache)
            try:
                # A profile on disk, as a user's browser has: an incognito context's cache lives in
                # memory and leaves out files of several MB, which a user's disk cache keeps.
                context = playwright.chromium.launch_persistent_context(
                    tempfile.mkdtemp(dir=scratch), executable_path=str(CHROMIUM), headless=True,
                    args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 850})
                visits += [(name, visit(context, server.url, photo, args.weights)) for name in names]
                context.close()
            finally:
                server.stop()
    return visits


def report(src: Path, visits: list[tuple[str, dict]]) -> None:
    print(f"\n{src}")
    print("| visit | on the wire | runtime | models | page | requests (cache / 304 / gzip) | slowest file | "
          "models running | first answer |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for name, v in visits:
        mb = {k: v["bytes"].get(k, 0) / 1e6 for k in ("runtime", "models", "page")}
        print(f"| {name} | {v['total'] / 1e6:.2f} MB | {mb['runtime']:.2f} MB | {mb['models']:.2f} MB | "
              f"{mb['page']:.3f} MB | {v['requests']} ({v['from cache']} / {v['304']} / {v['gzip']}) | "
              f"{v['slowest'][1]} {v['slowest'][0]:.1f} s | {v['ready_s']:.1f} s | {v['answer_s']:.1f} s |")
    print(f"answer: {visits[0][1]['status']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", type=Path, help="another checkout's src/ to measure first (e.g. the code before)")
    parser.add_argument("--photo", type=Path, help="the photo to answer (default: skimage's astronaut)")
    parser.add_argument("--model", help="--model for serve (default: the bundled model)")
    parser.add_argument("--workers", type=int, default=0, help="--workers for serve (default: serve's own)")
    parser.add_argument("--weights", choices=["light", "exact"], default="light",
                        help="the page's model files: light (default) or exact (?weights=exact)")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"no Chromium at {CHROMIUM}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        photo = args.photo
        if photo is None:
            from PIL import Image
            from skimage import data

            photo = Path(scratch) / "astronaut.jpg"
            Image.fromarray(data.astronaut()).save(photo, quality=90)
        sources = ([args.compare] if args.compare else []) + [SRC]
        results = [(src, measure(src, args, photo, Path(scratch))) for src in sources]
        for src, visits in results:
            report(src, visits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
