"""Reliability of `face-emotion serve` under hostile input, load and time, in one run.

    python benchmarks/reliability.py [--model RUN_DIR] [--requests 2000] [--clients 16] [--duration 60]
        [--workers 2] [--threads 4] [--detector NAME] [--kill-duration 20] [--no-kill]
        [--slow-duration 15] [--no-slow | --only-slow] [--json FILE]

One gunicorn server (`face-emotion serve`, a subprocess in its own session, on a free loopback port,
run in an empty working directory with an empty TMPDIR) goes through six phases:

1. warm-up: requests from the same number of clients as later, so every worker thread, buffer and
   lazily built object exists before anything is measured;
2. hostile: every kind of hostile upload once (empty, not an image, SVG, truncated, a 30000 x 30000
   PNG bomb, 30 MB of random bytes, 300 files in a batch, path-like file names, ...): each must be a
   4xx JSON error or a correct prediction, no worker may die, and /health must answer after;
3. soak: --requests requests (valid photos, batches, and some bad uploads expecting their 4xx),
   with resident memory, open file descriptors and threads of the master and every worker read
   from /proc before, half-way and after: memory growth from before to after under 10 %, no more
   fds after than before, no more threads after than half-way (pools fill lazily up to their size);
4. load: --clients closed-loop clients for --duration seconds, valid photos only: every answer
   must be a 200, and latency p50/p95/p99 and throughput are reported;
5. kill: the same load for --kill-duration seconds; a third of the way in, one worker gets
   SIGKILL. Every request must end in a correct answer, a JSON error, or a connection error the
   client sees (never a silent wrong answer); the master must start a replacement worker, and
   requests after the kill must succeed again;
6. slow: other clients hold connections open without finishing a request, one scenario after the
   other for --slow-duration seconds each (SLOW_SCENARIOS: connections that send nothing, that send
   their headers a line every 2 s, that send a body 100 bytes every 2 s, slow clip uploads, a mix
   of a few hundred, and a flood past the connection cap). Meanwhile a normal client sends GET
   /health and POST /predict in turn: each must be answered within 2 s (a 200, or past the cap a
   JSON 503). The held connections must end with a JSON 408 (or 503), and /health must answer
   within 2 s once they are gone.

The report is a markdown table on stdout (and JSON with --json). The exit status is 1 when a check
failed. Only loopback traffic; every loop is bounded in count and time. test_soak_small.py runs
these same phases at a small scale in the test suite.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The helpers the tests use too (encoders, a server launcher): tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.images import encode, photo, png_bomb  # noqa: E402
from support.server import ServerProcess, free_port, serve_command  # noqa: E402
from support.server import multipart as support_multipart  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------

BOUNDARY = "reliability-boundary-5b1e"


@dataclass(frozen=True)
class Payload:
    """One request to send and the statuses that count as a correct answer to it."""

    name: str
    path: str
    body: bytes
    content_type: str
    expect: frozenset[int] = frozenset({200})
    expect_code: str | None = None  # the error code a 4xx must carry, when it matters


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    return support_multipart(parts, BOUNDARY)


def valid_payloads() -> list[Payload]:
    """The photos of the soak and load phases: sizes, formats and modes a real client sends."""
    from PIL import Image

    face = photo(256)
    small = photo(96)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(face.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=85, exif=exif.tobytes())
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    payloads = [
        Payload("jpeg-256", "/predict", encode(face, "JPEG", quality=88), "image/jpeg"),
        Payload("png-96", "/predict", encode(small, "PNG"), "image/png"),
        Payload("exif-rotated", "/predict", rotated, "image/jpeg"),
        Payload("grey-webp", "/predict", encode(small.convert("L"), "WEBP"), "image/webp"),
        Payload("gif-animated", "/predict", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
                "image/gif"),
        Payload("one-pixel", "/predict", encode(Image.new("RGB", (1, 1)), "PNG"), "image/png"),
        Payload("explain", "/predict?explain=1", encode(small, "JPEG"), "image/jpeg"),
    ]
    body, content_type = multipart([("image", "face.jpg", encode(face, "JPEG", quality=85))])
    payloads.append(Payload("multipart", "/predict", body, content_type))
    body, content_type = multipart([("images", f"{i}.jpg", encode(small, "JPEG")) for i in range(3)])
    payloads.append(Payload("batch-3", "/predict/batch", body, content_type))
    return payloads


def bad_payloads() -> list[Payload]:
    """Cheap bad uploads mixed into the soak: each must get its 4xx JSON answer, every time."""
    truncated = encode(photo(128), "JPEG")[:600]
    return [
        Payload("not-an-image", "/predict", b"hello, not a photo" * 10, "image/jpeg", frozenset({400}),
                "invalid_image"),
        Payload("truncated-jpeg", "/predict", truncated, "image/jpeg", frozenset({400}), "invalid_image"),
        Payload("svg", "/predict", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", frozenset({415}),
                "unsupported_media_type"),
        Payload("empty", "/predict", b"", "image/png", frozenset({400}), "no_image"),
    ]


def hostile_payloads(max_batch: int = 16) -> list[Payload]:
    """Every hostile kind once (phase 2)."""
    from PIL import Image

    payloads = list(bad_payloads())
    svg = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script><text>&x;</text></svg>')
    body, content_type = multipart([("image", "drawing.jpg", svg)])
    payloads.append(Payload("svg-named-jpg", "/predict", body, content_type, frozenset({400}), "invalid_image"))
    body, content_type = multipart([("file", "a.jpg", encode(photo(64), "JPEG"))])
    payloads.append(Payload("wrong-field", "/predict", body, content_type, frozenset({400}), "no_image"))
    payloads.append(Payload("png-bomb-30000", "/predict", png_bomb(), "image/png", frozenset({413}), "image_too_large"))
    payloads.append(Payload("random-30MB", "/predict", random.Random(30).randbytes(30 * 1024 * 1024),
                            "application/octet-stream", frozenset({413}), "payload_too_large"))
    png = encode(photo(64), "PNG")
    payloads.append(Payload("truncated-png", "/predict", png[: len(png) // 2], "image/png", frozenset({400}),
                            "invalid_image"))
    cmyk = encode(Image.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG")
    payloads.append(Payload("cmyk-jpeg", "/predict", cmyk, "image/jpeg"))
    import numpy as np

    deep = encode(Image.fromarray(np.full((30, 40), 50_000, dtype=np.uint16)), "PNG")
    payloads.append(Payload("grey16-png", "/predict", deep, "image/png"))
    one = encode(Image.new("RGB", (1, 1)), "PNG")
    body, content_type = multipart([("images", f"{i}.png", one) for i in range(300)])
    payloads.append(Payload("batch-300", "/predict/batch", body, content_type, frozenset({413}), "too_many_images"))
    names = ["../../../../tmp/evil.jpg", "..\\..\\win.ini", "/etc/passwd", "<script>x</script>.jpg",
             "\u540d\u524d.jpg", "a;b.jpg", "x" * 2000 + ".jpg"]
    body, content_type = multipart([("images", name, one) for name in names[:max_batch]])
    payloads.append(Payload("odd-file-names", "/predict/batch", body, content_type))
    return payloads


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

class Server(ServerProcess):
    """`face-emotion serve` in its own session, in an empty cwd with an empty TMPDIR."""

    def __init__(self, model: str | None, *, workers: int = 2, threads: int = 4, detector: str | None = None,
                 inference_threads: int = 1, extra: list[str] | None = None, root: Path | None = None):
        port = free_port()
        self.root = Path(root or tempfile.mkdtemp(prefix="face-emotion-reliability-"))
        self.cwd, self.tmp = self.root / "cwd", self.root / "tmp"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.workers_wanted = workers
        options = ["--workers", str(workers), "--threads", str(threads), "--inference-threads", str(inference_threads),
                   *(extra or [])]
        if model:
            options += ["--model", str(model)]
        if detector:
            options += ["--detector", detector]
        super().__init__(serve_command(port, *options), port, self.root / "serve.log", cwd=self.cwd, name="the server",
                         env={"TMPDIR": str(self.tmp), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"})

    def start(self, timeout_s: float = 120, ready=None) -> Server:
        # Up means every worker has booted, not just the first to answer /health.
        return super().start(timeout_s, ready or (lambda: len(self.worker_pids()) == self.workers_wanted))

    def worker_pids(self) -> list[int]:
        return sorted(children(self.pid))

    def files(self) -> list[str]:
        """What is in the server's working directory and temp dir."""
        return sorted(str(p.relative_to(self.root)) for d in (self.cwd, self.tmp) for p in d.rglob("*"))


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def process_stats(pid: int) -> dict[str, int]:
    """Resident memory (RSS and PSS, kB), threads and open file descriptors of one process, from /proc.

    RSS counts the pages a worker shares with the master (copy-on-write after the fork) in both;
    PSS splits shared pages between their users, so PSS sums to the memory really used.
    """
    stats = {"pid": pid, "pss_kb": 0}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                stats["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                stats["threads"] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    stats["pss_kb"] = int(line.split()[1])
    except OSError:  # older kernels
        pass
    stats["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return stats


def open_sockets(pid: int) -> int:
    """Sockets a process holds: the shared listening one plus its client connections."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def server_stats(server: Server) -> dict:
    """The master and every worker, and their sums."""
    processes = [process_stats(server.pid)] + [process_stats(p) for p in server.worker_pids()]
    return {
        "rss_mb": round(sum(p["rss_kb"] for p in processes) / 1024, 1),
        "pss_mb": round(sum(p["pss_kb"] for p in processes) / 1024, 1),
        "fds": sum(p["fds"] for p in processes),
        "threads": sum(p["threads"] for p in processes),
        "processes": processes,
    }


def settled_stats(server: Server, wait_s: float = 4.0) -> dict:
    """Stats once client connections are closed: the lowest fd count seen within ``wait_s``."""
    best = server_stats(server)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = server_stats(server)
        if now["fds"] <= best["fds"]:
            best = now
    return best


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    payload: str
    kind: str  # "ok", "json_error" (the expected 4xx, or another JSON error), "connection_error", "bad"
    status: int | None
    latency_ms: float
    at: float  # time.monotonic() when the request ended
    detail: str = ""


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def judge(payload: Payload, status: int, content_type: str, body: bytes) -> tuple[str, str]:
    """("ok" | "json_error" | "bad", why). A wrong answer is "bad", an honest error is not."""
    text = body.decode("utf-8", "replace")
    if "Traceback" in text or 'File "/' in text:
        return "bad", "traceback in the body"
    if not content_type.startswith("application/json"):
        return "bad", f"{status} with Content-Type {content_type!r}"
    try:
        document = json.loads(body)
    except ValueError:
        return "bad", f"{status} with a body that is not JSON"
    if status >= 400:
        error = document.get("error") if isinstance(document, dict) else None
        if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
            return "bad", f"{status} without an error object"
        if status not in payload.expect or (payload.expect_code and error["code"] != payload.expect_code):
            # A clean JSON error, but not the one this input calls for (e.g. 503 timeout under load).
            return "json_error", f"{status} {error['code']}"
        return "ok", ""
    if status not in payload.expect:
        return "bad", f"{status} where {sorted(payload.expect)} was due"
    items = document.get("results", [document])
    for item in items:
        if item.get("error") is not None:
            continue
        for face in item.get("faces", []):
            probabilities = face.get("probabilities", {})
            if abs(sum(probabilities.values()) - 1) > 1e-3 or face.get("emotion") not in probabilities:
                return "bad", "a prediction whose probabilities do not add up"
        if "image" not in item or "faces" not in item:
            return "bad", "a 200 without the prediction fields"
    return "ok", ""


class Client:
    """One keep-alive connection; reconnects after a connection error (counting it)."""

    def __init__(self, url: str, timeout: float = 60, keep_alive: bool = True):
        netloc = url.split("//", 1)[1]
        host, port = netloc.split(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.keep_alive = keep_alive
        self.connection: http.client.HTTPConnection | None = None

    def send(self, payload: Payload) -> Outcome:
        start = time.monotonic()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.connection.request("POST", payload.path, body=payload.body,
                                        headers={"Content-Type": payload.content_type})
            except (BrokenPipeError, ConnectionResetError):
                # The server answered before the upload ended (a 413 for a body over the limit) and
                # closed its side; its answer is already here to read, as curl or a browser reads it.
                pass
            response = self.connection.getresponse()
            body = response.read()
            status, content_type = response.status, response.getheader("Content-Type", "")
            if response.will_close or not self.keep_alive:
                self.close()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            end = time.monotonic()
            return Outcome(payload.name, "connection_error", None, (end - start) * 1000, end,
                           type(error).__name__)
        end = time.monotonic()
        kind, why = judge(payload, status, content_type, body)
        return Outcome(payload.name, kind, status, (end - start) * 1000, end, why)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def drive(url: str, payloads: list[Payload], *, clients: int, requests: int | None = None,
          duration_s: float | None = None, seed: int = 0, on_tick=None, keep_alive: bool = True) -> list[Outcome]:
    """Closed-loop clients, each sending its next request when the last one is answered.

    Stops after ``requests`` in all or ``duration_s`` seconds, whichever comes first (one is needed).
    ``on_tick(elapsed_s)`` is called about every 50 ms from the calling thread (for the worker kill).
    """
    assert requests is not None or duration_s is not None
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    issued = [0]
    start = time.monotonic()
    # A hard ceiling whatever the arguments: nothing here may run unbounded.
    end = start + (duration_s if duration_s is not None else 600)

    def take() -> bool:
        with lock:
            if requests is not None and issued[0] >= requests:
                return False
            issued[0] += 1
            return True

    def loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        client = Client(url, keep_alive=keep_alive)
        mine = []
        try:
            while time.monotonic() < end and take():
                mine.append(client.send(rng.choice(payloads)))
        finally:
            client.close()
            with lock:
                outcomes.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if on_tick is not None:
            on_tick(time.monotonic() - start)
        for thread in threads:
            thread.join(0.05 / max(1, len(threads)))
    return outcomes


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 1)


def summarise(outcomes: list[Outcome], elapsed_s: float | None = None) -> dict:
    kinds = {kind: sum(o.kind == kind for o in outcomes) for kind in ("ok", "json_error", "connection_error", "bad")}
    latencies = [o.latency_ms for o in outcomes if o.kind == "ok"]
    summary = {"requests": len(outcomes), **kinds,
               "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
               "p99_ms": percentile(latencies, 99)}
    if elapsed_s:
        summary["elapsed_s"] = round(elapsed_s, 1)
        summary["per_s"] = round(len(outcomes) / elapsed_s, 1)
    problems = [f"{o.payload}: {o.kind} {o.status} {o.detail}" for o in outcomes if o.kind != "ok"]
    summary["examples"] = sorted(set(problems))[:8]
    return summary


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------

@dataclass
class Scale:
    warmup: int = 300
    requests: int = 2000
    clients: int = 16
    duration_s: float = 60.0
    kill_duration_s: float = 20.0
    kill: bool = True
    bad_fraction: float = 0.1  # share of the soak's requests that are bad uploads expecting a 4xx
    slow: bool = False  # phase 6 (the command line runs it unless --no-slow)
    slow_duration_s: float = 15.0
    only_slow: bool = False  # phase 6 alone (after the warm-up)


@dataclass
class Report:
    scale: dict
    server: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    slow: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def hostile_phase(server: Server, report: Report) -> None:
    pids = server.worker_pids()
    client = Client(server.url)
    outcomes = []
    for payload in hostile_payloads():
        outcomes.append(client.send(payload))
        client.close()  # a fresh connection each: one refused upload must not poison the next
    status, body = get(server.url + "/health")
    summary = summarise(outcomes)
    summary["per_payload"] = {o.payload: f"{o.status} {o.kind}" for o in outcomes}
    report.phases["hostile"] = summary
    report.checks["hostile: every answer the expected 4xx JSON or a correct prediction"] = (
        summary["ok"] == len(outcomes))
    report.checks["hostile: no worker died"] = server.worker_pids() == pids
    report.checks["hostile: /health answers after"] = status == 200 and json.loads(body)["status"] == "ok"


def soak_phase(server: Server, scale: Scale, report: Report) -> None:
    valid, bad = valid_payloads(), bad_payloads()
    # Each valid payload 20 times, each bad one often enough to make bad_fraction of the mix.
    bad_share = min(max(scale.bad_fraction, 0.0), 0.9)
    repeats = round(20 * len(valid) * bad_share / (1 - bad_share) / len(bad))
    mix = valid * 20 + bad * repeats
    before = settled_stats(server)
    start = time.monotonic()
    half = scale.requests // 2
    first = drive(server.url, mix, clients=scale.clients, requests=half, seed=1)
    middle = settled_stats(server, wait_s=2.0)
    second = drive(server.url, mix, clients=scale.clients, requests=scale.requests - half, seed=2)
    elapsed = time.monotonic() - start
    after = settled_stats(server)
    summary = summarise(first + second, elapsed)
    report.phases["soak"] = summary
    report.resources["soak"] = {"before": _brief(before), "middle": _brief(middle), "after": _brief(after)}
    growth = (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
    report.resources["soak"]["rss_growth_pct"] = round(100 * growth, 1)
    report.checks["soak: every answer correct (4xx where due)"] = summary["ok"] == summary["requests"]
    report.checks["soak: memory growth under 10 %"] = growth < 0.10
    report.checks["soak: no fd growth"] = after["fds"] <= before["fds"]
    # Thread pools (gunicorn's per-connection threads, the inference thread) start their threads lazily,
    # up to their configured size, so the first half of the soak may still fill a pool the warm-up did
    # not; a leak goes on growing, so the second half must add none.
    report.checks["soak: no thread growth (second half)"] = after["threads"] <= middle["threads"]


def _brief(stats: dict) -> dict:
    return {"rss_mb": stats["rss_mb"], "pss_mb": stats["pss_mb"], "fds": stats["fds"], "threads": stats["threads"],
            "per_process": [{"pid": p["pid"], "rss_mb": round(p["rss_kb"] / 1024, 1),
                             "pss_mb": round(p["pss_kb"] / 1024, 1), "fds": p["fds"], "threads": p["threads"]}
                            for p in stats["processes"]]}


def load_phase(server: Server, scale: Scale, report: Report) -> None:
    start = time.monotonic()
    outcomes = drive(server.url, valid_payloads(), clients=scale.clients, duration_s=scale.duration_s, seed=3)
    summary = summarise(outcomes, time.monotonic() - start)
    report.phases["load"] = summary
    report.checks[f"load: {scale.clients} clients x {scale.duration_s:g} s with zero errors"] = (
        summary["ok"] == summary["requests"] > 0)


def kill_phase(server: Server, scale: Scale, report: Report) -> None:
    victims = server.worker_pids()
    killed: list[int] = []
    killed_at: list[float] = []

    def tick(elapsed: float) -> None:
        if not killed_at and elapsed >= scale.kill_duration_s / 3:
            # The worker holding the most client connections, so that requests are in flight on it.
            victim = max(victims, key=open_sockets)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            killed_at.append(time.monotonic())

    start = time.monotonic()
    outcomes = drive(server.url, valid_payloads(), clients=scale.clients, duration_s=scale.kill_duration_s,
                     seed=4, on_tick=tick)
    elapsed = time.monotonic() - start
    # The master notices the death and forks a replacement; give it a few seconds.
    deadline = time.monotonic() + 30
    victim = killed[0] if killed else None
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if len(pids) == len(victims) and victim not in pids:
            break
        time.sleep(0.2)
    pids = server.worker_pids()
    status, _ = get(server.url + "/health")
    summary = summarise(outcomes, elapsed)
    kill_time = killed_at[0] if killed_at else float("inf")
    after_kill = [o for o in outcomes if o.at > kill_time]
    failures = [o for o in outcomes if o.kind != "ok"]
    summary["killed_pid"] = victim
    summary["workers_after"] = pids
    summary["ok_after_kill"] = sum(o.kind == "ok" for o in after_kill)
    summary["last_failure_s_after_kill"] = round(max((o.at - kill_time for o in failures), default=0.0), 2)
    report.phases["kill"] = summary
    report.checks["kill: no silent failure (each request a correct answer, JSON error or connection error)"] = (
        summary["bad"] == 0)
    report.checks["kill: the worker was replaced"] = len(pids) == len(victims) and victim not in pids
    report.checks["kill: requests succeed after the kill"] = summary["ok_after_kill"] > 0
    report.checks["kill: /health answers after"] = status == 200


# ---------------------------------------------------------------------------------------------
# Slow and idle clients
# ---------------------------------------------------------------------------------------------

NORMAL_WITHIN_S = 2.0  # what a normal client may wait while others hold connections
PROBE_TIMEOUT_S = 5.0  # a normal request not answered by then counts as timed out
SLOW_INTERVAL_S = 2.0  # slow header and body clients send a piece this often
CLIP_PIECE, CLIP_INTERVAL_S, CLIP_BYTES = 16 * 1024, 0.25, 4 * 1024 * 1024  # a clip upload at 64 kB/s


@dataclass(frozen=True)
class SlowScenario:
    name: str
    idle: int = 0  # connect and send nothing
    headers: int = 0  # the request line, then a header line every SLOW_INTERVAL_S
    bodies: int = 0  # the headers (Content-Length 1 MB) at once, then 100 bytes every SLOW_INTERVAL_S
    clips: int = 0  # a 4 MB multipart upload to /predict/video, at 64 kB/s
    flood: bool = False  # idle connections: the server's whole connection cap and 64 more


SLOW_SCENARIOS = (
    SlowScenario("nothing"),
    SlowScenario("4 slow-header", headers=4),
    SlowScenario("8 slow-header", headers=8),
    SlowScenario("8 idle", idle=8),
    SlowScenario("64 idle", idle=64),
    SlowScenario("32 idle + 32 slow-header + 32 slow-body", idle=32, headers=32, bodies=32),
    SlowScenario("100 idle + 100 slow-header + 100 slow-body", idle=100, headers=100, bodies=100),
    SlowScenario("8 slow clip uploads", clips=8),
    SlowScenario("flood: cap + 64 idle", flood=True),
)


def server_cap(server: Server) -> int:
    """Connections the server holds in all: --max-connections (or its default) times the workers."""
    from face_emotion.server.config import RunOptions

    command = server.command
    per_worker = (int(command[command.index("--max-connections") + 1]) if "--max-connections" in command
                  else RunOptions().max_connections)
    return per_worker * server.workers_wanted


class _Held:
    """One connection of a slow or idle client: what it still has to send, and what came back."""

    def __init__(self, kind: str, sock, pieces: list[bytes], interval_s: float):
        self.kind, self.sock, self.pieces, self.interval_s = kind, sock, pieces, interval_s
        self.next_send = time.monotonic()
        self.received = b""
        self.closed = False

    def outcome(self) -> str:
        if self.received.startswith(b"HTTP/"):
            return self.received.split(b" ", 2)[1].decode("latin-1", "replace")
        return "closed" if self.closed else "open"


def _slow_pieces(kind: str, index: int) -> tuple[list[bytes], float]:
    if kind == "headers":
        return ([b"POST /predict HTTP/1.1\r\n", b"Host: slow\r\n"]
                + [f"X-Slow-{i}: {index}\r\n".encode() for i in range(300)], SLOW_INTERVAL_S)
    if kind == "bodies":
        head = (b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 1000000\r\n\r\n")
        return [head + b"\xff" * 100] + [b"\xff" * 100] * 300, SLOW_INTERVAL_S
    if kind == "clips":
        body, content_type = multipart([("video", "clip.mp4", random.Random(index).randbytes(CLIP_BYTES))])
        head = (f"POST /predict/video HTTP/1.1\r\nHost: slow\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return [head] + [body[i:i + CLIP_PIECE] for i in range(0, len(body), CLIP_PIECE)], CLIP_INTERVAL_S
    return [], 0.0


def hold_connections(host: str, port: int, counts: dict[str, int], stop: threading.Event,
                     held: list[_Held]) -> None:
    """Open the slow and idle connections and keep them going until ``stop`` (in a thread)."""
    import selectors
    import socket

    selector = selectors.DefaultSelector()
    for kind, count in counts.items():
        for index in range(count):
            if stop.is_set():
                break
            try:
                sock = socket.create_connection((host, port), timeout=2)
            except OSError:
                held.append(_Held(kind, None, [], 0.0))
                held[-1].closed = True
                continue
            sock.setblocking(False)
            pieces, interval = _slow_pieces(kind, index)
            connection = _Held(kind, sock, pieces, interval)
            held.append(connection)
            selector.register(sock, selectors.EVENT_READ, connection)
    try:
        while not stop.is_set():
            for key, _ in selector.select(timeout=0.05):
                connection = key.data
                try:
                    data = connection.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    connection.received += data[: max(0, 4096 - len(connection.received))]
                else:
                    connection.closed = True
                    selector.unregister(connection.sock)
            now = time.monotonic()
            for connection in held:
                if connection.closed or not connection.pieces or now < connection.next_send:
                    continue
                try:
                    sent = connection.sock.send(connection.pieces[0])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    connection.pieces = []
                    continue
                if sent < len(connection.pieces[0]):
                    connection.pieces[0] = connection.pieces[0][sent:]
                else:
                    connection.pieces.pop(0)
                    connection.next_send = now + connection.interval_s
    finally:
        selector.close()
        for connection in held:
            if connection.sock is not None:
                connection.sock.close()


def probe(host: str, port: int, method: str, path: str, body: bytes | None) -> tuple[str, float]:
    """(status or error name, seconds) of one request from a normal client on a new connection."""
    start = time.monotonic()
    connection = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "image/jpeg"} if body else {})
        response = connection.getresponse()
        payload = response.read()
        status = str(response.status)
        if response.status >= 400 and not response.getheader("Content-Type", "").startswith("application/json"):
            status += " (not JSON)"
        elif response.status >= 400:
            status += " " + json.loads(payload)["error"]["code"]
    except (OSError, http.client.HTTPException, ValueError) as error:
        status = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
    finally:
        connection.close()
    return status, time.monotonic() - start


def slow_scenario(url: str, scenario: SlowScenario, duration_s: float, cap: int | None) -> dict:
    host, port = url.split("//", 1)[1].split(":")
    port = int(port)
    photo_body = encode(photo(256), "JPEG", quality=88)
    counts = {"idle": scenario.idle + ((cap or 0) + 64 if scenario.flood else 0), "headers": scenario.headers,
              "bodies": scenario.bodies, "clips": scenario.clips}
    stop = threading.Event()
    held: list[_Held] = []
    holder = threading.Thread(target=hold_connections, args=(host, port, counts, stop, held), daemon=True)
    holder.start()
    time.sleep(1.0 if sum(counts.values()) else 0.0)  # the connections are open and started sending
    probes: list[tuple[str, str, float]] = []
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        for name, method, path, body in (("health", "GET", "/health", None),
                                         ("predict", "POST", "/predict", photo_body)):
            status, seconds = probe(host, port, method, path, body)
            probes.append((name, status, seconds))
        time.sleep(0.2)
    stop.set()
    holder.join(10)
    outcomes: dict[str, int] = {}
    for connection in held:
        if connection.kind != "clips":
            outcomes[connection.outcome()] = outcomes.get(connection.outcome(), 0) + 1
    clips = [connection.outcome() for connection in held if connection.kind == "clips"]
    time.sleep(0.5)
    recovery = probe(host, port, "GET", "/health", None)
    # Past the cap a JSON 503 is the answer due; anything else must be a 200.
    good = {"200", "503 too_many_connections"} if scenario.flood else {"200"}
    within = [p for p in probes if p[1] in good and p[2] <= NORMAL_WITHIN_S]

    def figures(name: str) -> dict:
        times = [1000 * p[2] for p in probes if p[0] == name and p[1] in good]
        return {"answered": len(times), "sent": sum(p[0] == name for p in probes),
                "p50_ms": percentile(times, 50), "max_ms": round(max(times), 1) if times else None}

    return {
        "scenario": scenario.name, "held": sum(counts.values()),
        "health": figures("health"), "predict": figures("predict"),
        "within_2s": f"{len(within)}/{len(probes)}",
        "statuses": sorted({p[1] for p in probes}),
        "held_outcomes": outcomes, "clip_outcomes": sorted(set(clips)),
        "recovery": f"{recovery[0]} in {1000 * recovery[1]:.0f} ms",
        "passed": (len(within) == len(probes) and not any(k in outcomes for k in ("open", "closed"))
                   and recovery[0] == "200" and recovery[1] <= NORMAL_WITHIN_S),
    }


def slow_phase(url: str, duration_s: float, *, cap: int | None, scenarios=SLOW_SCENARIOS, log=print) -> list[dict]:
    """Every scenario in turn against the server at ``url``; ``cap``: its connections in all (the
    flood opens that many and 64 more; None: no flood scenario)."""
    rows = []
    for scenario in scenarios:
        if scenario.flood and cap is None:
            continue
        row = slow_scenario(url, scenario, duration_s, cap)
        log(f"slow: {row['scenario']}: {row['within_2s']} within {NORMAL_WITHIN_S:g} s; held {row['held_outcomes']}; "
            f"recovery {row['recovery']}")
        rows.append(row)
    return rows


def format_slow(rows: list[dict]) -> str:
    lines = [f"| other clients | normal GET /health p50 / max ms | normal POST /predict p50 / max ms | "
             f"answered within {NORMAL_WITHIN_S:g} s | held connections ended | /health after |",
             "|---|---:|---:|---:|---|---|"]
    for row in rows:
        def cell(figures: dict) -> str:
            if not figures["answered"]:
                return f"none of {figures['sent']}"
            return f"{figures['p50_ms']:.0f} / {figures['max_ms']:.0f}"
        ended = ", ".join(f"{count} {kind}" for kind, count in sorted(row["held_outcomes"].items()))
        if row["clip_outcomes"]:
            ended += ("; " if ended else "") + "clips: " + "/".join(row["clip_outcomes"])
        answered = row["within_2s"]
        if row["statuses"] != ["200"]:
            answered += f" ({', '.join(row['statuses'])})"
        lines.append(f"| {row['scenario']} | {cell(row['health'])} | {cell(row['predict'])} | {answered} | "
                     f"{ended or '-'} | {row['recovery']} |")
    return "\n".join(lines)


def run(model: str | None, scale: Scale, *, workers: int = 2, threads: int = 4, detector: str | None = None,
        log=print, root: Path | None = None) -> Report:
    """All phases against one server. ``root``: where the server's cwd, TMPDIR and log go (default: a
    new temp folder, removed afterwards when every check passed, and kept, with its log, when not)."""
    report = Report(scale=asdict(scale))
    server = Server(model, workers=workers, threads=threads, detector=detector, root=root)
    try:
        _run_phases(server, scale, report, workers=workers, threads=threads, detector=detector, log=log)
    finally:
        server.stop()
    if root is None and report.passed:
        shutil.rmtree(server.root, ignore_errors=True)
    elif not report.passed:
        log(f"the server's log and folders are kept in {server.root}")
    return report


def _run_phases(server: Server, scale: Scale, report: Report, *, workers: int, threads: int,
                detector: str | None, log) -> None:
    with server:
        report.server = {"command": " ".join(server.command[1:]), "workers": workers, "threads": threads,
                         "detector": detector or "default"}
        log(f"server up on {server.url}: master {server.pid}, workers {server.worker_pids()}")
        started = server_stats(server)
        report.resources["started"] = _brief(started)
        # Libraries may leave files at start-up (ONNX Runtime a .ses file in TMPDIR); requests may not.
        files_at_start = server.files()
        report.resources["files_at_start"] = files_at_start[:10]
        # A new connection per request: the kernel then spreads them over the workers, so that every
        # worker's thread pool is full before the soak's "before" is read.
        drive(server.url, valid_payloads(), clients=max(scale.clients, 2 * workers * threads),
              requests=scale.warmup, seed=0, keep_alive=False)
        log(f"warm-up: {scale.warmup} requests")
        if not scale.only_slow:
            hostile_phase(server, report)
            log(f"hostile: {report.phases['hostile']['ok']}/{report.phases['hostile']['requests']} as expected")
            soak_phase(server, scale, report)
            log(f"soak: {report.phases['soak']['requests']} requests, "
                f"memory {report.resources['soak']['rss_growth_pct']} %")
            load_phase(server, scale, report)
            log(f"load: {report.phases['load']['requests']} requests, p95 {report.phases['load']['p95_ms']} ms")
        if scale.kill and not scale.only_slow:
            kill_phase(server, scale, report)
            log(f"kill: {report.phases['kill']['connection_error']} connection errors, "
                f"{report.phases['kill']['json_error']} JSON errors, {report.phases['kill']['bad']} bad")
        if scale.slow or scale.only_slow:
            rows = slow_phase(server.url, scale.slow_duration_s, cap=server_cap(server), log=log)
            report.slow = rows
            for row in rows:
                report.checks[f"slow: {row['scenario']}: every normal request answered within "
                              f"{NORMAL_WITHIN_S:g} s, held ones closed, recovery"] = row["passed"]
        report.resources["end"] = _brief(settled_stats(server))
        written = sorted(set(server.files()) - set(files_at_start))
        report.checks["no file written to the server's cwd or temp dir by requests"] = not written
        report.resources["files_written"] = written[:10]


def format_report(report: Report) -> str:
    lines = ["## Reliability of face-emotion serve", "",
             f"Server: `{report.server.get('command', '')}`", "",
             "| phase | requests | ok | JSON errors | connection errors | bad | p50 ms | p95 ms | p99 ms | req/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, phase in report.phases.items():
        lines.append(f"| {name} | {phase['requests']} | {phase['ok']} | {phase['json_error']} | "
                     f"{phase['connection_error']} | {phase['bad']} | {phase['p50_ms']} | {phase['p95_ms']} | "
                     f"{phase['p99_ms']} | {phase.get('per_s', '')} |")
    lines += ["", "| resources (master + workers) | RSS MB | PSS MB | fds | threads |", "|---|---:|---:|---:|---:|"]
    for label, key in (("started", ("started",)), ("soak before (after warm-up)", ("soak", "before")),
                       ("soak middle", ("soak", "middle")), ("soak after", ("soak", "after")), ("end", ("end",))):
        stats = report.resources
        for part in key:
            stats = stats.get(part, {}) if isinstance(stats, dict) else {}
        if stats:
            lines.append(f"| {label} | {stats['rss_mb']} | {stats['pss_mb']} | {stats['fds']} | {stats['threads']} |")
    if "soak" in report.resources:
        lines.append(f"\nMemory growth over the soak: {report.resources['soak']['rss_growth_pct']} %")
    if "kill" in report.phases:
        kill = report.phases["kill"]
        lines.append(f"Worker kill: pid {kill['killed_pid']} killed; workers after: {kill['workers_after']}; "
                     f"{kill['ok_after_kill']} correct answers after the kill; last failure "
                     f"{kill['last_failure_s_after_kill']} s after it.")
    if report.slow:
        lines += ["", format_slow(report.slow)]
    lines += ["", "| check | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else '**FAIL**'} |" for name, ok in report.checks.items()]
    examples = {name: phase["examples"] for name, phase in report.phases.items() if phase.get("examples")}
    if examples:
        lines += ["", "Non-ok answers (examples):"]
        lines += [f"- {name}: {', '.join(items)}" for name, items in examples.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run folder or model file (default: the bundled model)")
    parser.add_argument("--requests", type=int, default=2000, help="soak requests")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the load phase")
    parser.add_argument("--kill-duration", type=float, default=20.0, help="seconds of the worker-kill phase")
    parser.add_argument("--no-kill", action="store_true", help="skip the worker-kill phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--detector", help="face detector (default: the server's default)")
    parser.add_argument("--slow-duration", type=float, default=15.0, help="seconds of each slow-client scenario")
    slow = parser.add_mutually_exclusive_group()
    slow.add_argument("--no-slow", action="store_true", help="skip the slow-client phase")
    slow.add_argument("--only-slow", action="store_true", help="run the slow-client phase alone")
    parser.add_argument("--json", dest="json_path", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    for name in ("requests", "warmup", "clients"):
        if not 1 <= getattr(args, name) <= 1_000_000:
            parser.error(f"--{name} must be between 1 and 1e6")
    if not 0 < args.duration <= 3600 or not 0 < args.kill_duration <= 3600 or not 0 < args.slow_duration <= 600:
        parser.error("durations must be between 0 and 3600 seconds")
    scale = Scale(warmup=args.warmup, requests=args.requests, clients=args.clients, duration_s=args.duration,
                  kill_duration_s=args.kill_duration, kill=not args.no_kill, slow=not args.no_slow,
                  slow_duration_s=args.slow_duration, only_slow=args.only_slow)
    report = run(args.model, scale, workers=args.workers, threads=args.threads, detector=args.detector,
                 log=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
