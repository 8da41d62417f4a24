"""Server arrangements for `face-emotion serve`, measured side by side in one run.

    python benchmarks/serve_fronts.py [--model M] [--candidates buffered,gthread,waitress,gevent,nginx]
        [--base-src DIR] [--site DIR ...] [--duration 10] [--slow-duration 12] [--json FILE]

Each candidate serves the same app (the bundled model unless --model, the default detector) on a
free loopback port, all started at once, and gets the same measurements:
- p50 latency at 1 client and req/s at 8 clients (closed loop, the page's 320 px photo as a
  multipart upload; serve_throughput.load), with the server's CPU ms per request (far less
  sensitive to the shared machine's other load than req/s); the rows alternate between the
  candidates, --rounds times, the order reversed every other round;
- resident memory after heatmaps: 12 POST /predict?explain=1 of a real face, then the RSS of
  every process of the server (largest single process and all together);
- the slow and idle client scenarios of reliability.py (a normal client must be answered within
  2 s while others hold connections; the held ones must end with a JSON 408 or 503), one
  candidate at a time while the others idle.

Candidates:
- buffered: `face-emotion serve` as shipped (gunicorn, BufferingWorker: server/buffering.py);
- gthread: gunicorn's plain gthread worker, i.e. `serve` from --base-src (a checkout of the code
  before the buffering worker: `git archive` of it into a folder);
- waitress: Waitress 3 (pure Python; buffers whole requests) in one process, 8 threads, two
  inference slots, connection_limit 512, channel_timeout 10 s;
- gevent: gunicorn's gevent worker (2 workers x 256 connections);
- nginx: nginx from Debian in front of gthread (--base-src), client_header_timeout and
  client_body_timeout 10 s, keepalive_timeout 5 s, request buffering on, limit_conn 512.
waitress and gevent come from --site folders (pip install --target DIR ...) so that they need
not be in the project's environment; nginx from /usr/sbin/nginx.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from reliability import SLOW_SCENARIOS, format_slow, slow_phase  # noqa: E402
from serve_throughput import cpu_seconds, group_pids, load, photo_bytes, process_memory  # noqa: E402

from support.server import ServerProcess, free_port, multipart, serve_command  # noqa: E402

SRC = HERE.parent / "src"
WORKERS = 2
CAP = 512  # connections in all, where a candidate has a cap: 2 workers x 256 (serve's default)

WAITRESS_APP = """
import sys
from face_emotion.server import create_app
from face_emotion.server.config import ServerConfig
import waitress
model, port = sys.argv[1] or None, int(sys.argv[2])
app = create_app(ServerConfig(model=model, inference_threads=1, inference_concurrency=2))
app.extensions["face_emotion"].warm_up()
waitress.serve(app, host="127.0.0.1", port=port, threads=8, connection_limit=512, channel_timeout=10,
               cleanup_interval=1, max_request_body_size=50 * 1024 * 1024)
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fcgi;
    uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
    client_header_timeout 10s; client_body_timeout 10s; send_timeout 10s; keepalive_timeout 5s;
    client_max_body_size 50m; client_body_buffer_size 1m;
    limit_conn_zone $server_name zone=all:1m;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        limit_conn all 512; limit_conn_status 503;
        location / {{
            proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_request_buffering on; proxy_buffering on; proxy_read_timeout 120s;
        }}
    }}
}}
"""


@dataclass
class Candidate:
    name: str
    command: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    cap: int | None = None


def candidates(args, work: Path) -> dict[str, Candidate]:
    model = args.model or ""
    model_options = ["--model", args.model] if args.model else []
    base = {"PYTHONPATH": str(Path(args.base_src).resolve())} if args.base_src else {}
    sites = os.pathsep.join(str(Path(p).resolve()) for p in args.site)
    here = {"PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), sites]))}
    serve = ["--workers", str(WORKERS), "--threads", "4", *model_options]

    def gunicorn_gevent(port: int) -> list[str]:
        config = {"model": args.model or None, "inference_threads": 1}
        return [sys.executable, "-m", "gunicorn", "-k", "gevent", "--workers", str(WORKERS),
                "--worker-connections", str(CAP // WORKERS), "--keep-alive", "5", "--bind", f"127.0.0.1:{port}",
                f"face_emotion.server:create_app({config!r})"]

    def nginx(port: int) -> list[str]:
        upstream = free_port()
        root = work / f"nginx-{port}"
        for folder in ("body", "proxy", "fcgi", "uwsgi", "scgi"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port, upstream=upstream))
        gthread = " ".join(serve_command(upstream, *serve))
        # One process group: stopping the candidate stops nginx and gunicorn together.
        return ["sh", "-c", f"{gthread} & exec /usr/sbin/nginx -p {root} -c {root}/nginx.conf"]

    return {
        "buffered": Candidate("buffered (serve: BufferingWorker)", lambda port: serve_command(port, *serve),
                              {"PYTHONPATH": str(SRC)}, CAP),
        "gthread": Candidate("gthread (serve before)", lambda port: serve_command(port, *serve), base, CAP),
        "waitress": Candidate("waitress", lambda port: [sys.executable, "-c", WAITRESS_APP, model, str(port)],
                              here, CAP),
        "gevent": Candidate("gunicorn gevent worker", gunicorn_gevent, here, CAP),
        "nginx": Candidate("nginx + gthread", nginx, base, CAP),
    }


def heatmap_memory(port: int, pgid: int, requests: int = 12) -> dict:
    """RSS of each process of the server after ``requests`` POST /predict?explain=1 of a real face."""
    from worker_memory import astronaut_jpeg

    body = astronaut_jpeg()
    statuses = []

    def client(count: int) -> None:
        for _ in range(count):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                connection.request("POST", "/predict?explain=1", body=body, headers={"Content-Type": "image/jpeg"})
                response = connection.getresponse()
                statuses.append(response.status == 200 and b"heatmap_png" in response.read())
            except OSError:
                statuses.append(False)
            finally:
                connection.close()

    threads = [threading.Thread(target=client, args=(requests // 2,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    rss = [m[0] for m in (process_memory(pid) for pid in group_pids(pgid)) if m is not None]
    return {"heatmaps_ok": f"{sum(statuses)}/{len(statuses)}", "largest_mb": round(max(rss), 0),
            "total_mb": round(sum(rss), 0), "processes": len(rss)}


def throughput(port: int, pgid: int, body: bytes, content_type: str, clients: int, args) -> dict:
    cpu = cpu_seconds(pgid)
    latencies, errors, seconds, _, answered = load(port, body, content_type, clients, args.duration, args.warmup,
                                                   100_000)
    return {"latencies": latencies, "seconds": seconds, "errors": errors, "answered": answered,
            "cpu_s": cpu_seconds(pgid) - cpu}


def summary(parts: list[dict]) -> dict:
    latencies = sorted(x for part in parts for x in part["latencies"])
    seconds, answered = sum(p["seconds"] for p in parts), sum(p["answered"] for p in parts)
    return {"req_s": round(len(latencies) / seconds, 1) if seconds else None,
            "errors": sum(p["errors"] for p in parts),
            "p50_ms": round(latencies[len(latencies) // 2], 0) if latencies else None,
            "cpu_ms_per_req": round(1000 * sum(p["cpu_s"] for p in parts) / answered, 1) if answered else None}


def measure_all(chosen: list[Candidate], work: Path, args, body: bytes, content_type: str, log) -> list[dict]:
    """Every candidate up at once; the load rows alternate between them (in turn, the order reversed
    every other round) so that the shared machine's changing load falls on all alike; then memory
    and the slow scenarios, one candidate at a time while the others idle."""
    servers = []
    for candidate in chosen:
        port = free_port()
        servers.append(ServerProcess(candidate.command(port), port, work / f"{candidate.name.split()[0]}.log",
                                     env={**candidate.env, "OMP_WAIT_POLICY": "PASSIVE"}, name=candidate.name))
    rows = [{"candidate": c.name} for c in chosen]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(timeout_s=300)
        time.sleep(3)  # every worker booted
        loadavg = [Path("/proc/loadavg").read_text().split()[:3]]
        parts: dict[tuple[int, int], list[dict]] = {}
        for round_index in range(args.rounds):
            order = list(range(len(servers)))[:: -1 if round_index % 2 else 1]
            for clients in (1, 8):
                for i in order:
                    part = throughput(servers[i].port, servers[i].pid, body, content_type, clients, args)
                    parts.setdefault((i, clients), []).append(part)
                    log(f"{servers[i].name}: round {round_index + 1}, {clients} client(s): "
                        f"{summary([part])}")
        loadavg.append(Path("/proc/loadavg").read_text().split()[:3])
        words = [w.strip() for w in (args.scenarios or "").split(",") if w.strip()]
        scenarios = [s for s in SLOW_SCENARIOS if not words or any(w in s.name for w in words)]
        for i, (candidate, server, row) in enumerate(zip(chosen, servers, rows, strict=True)):
            row["c1"], row["c8"] = summary(parts[(i, 1)]), summary(parts[(i, 8)])
            row["loadavg_load"] = loadavg
            row["memory"] = heatmap_memory(server.port, server.pid)
            log(f"{candidate.name}: memory {row['memory']}")
            row["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
            row["slow"] = slow_phase(server.url, args.slow_duration, cap=candidate.cap, scenarios=scenarios,
                                     log=lambda t, name=candidate.name: log(f"  {name}: {t}"))
            row["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        for server in servers:
            server.stop()
    return rows


def format_rows(rows: list[dict]) -> str:
    if rows:
        load = rows[0]["loadavg_load"]
        lines = [f"Load rows, interleaved: load average {' '.join(load[0])} before, {' '.join(load[-1])} after.", ""]
    else:
        lines = []
    lines += ["| candidate | p50 ms, 1 client | req/s, 8 clients | CPU ms/req (8) | largest process after heatmaps, MB "
              "| slow scenarios passed | load avg before / after the slow scenarios |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        passed = sum(r["passed"] for r in row["slow"])
        lines.append(f"| {row['candidate']} | {row['c1']['p50_ms']} | {row['c8']['req_s']} | "
                     f"{row['c8']['cpu_ms_per_req']} | {row['memory']['largest_mb']:.0f} "
                     f"({row['memory']['heatmaps_ok']} heatmaps) | {passed}/{len(row['slow'])} | "
                     f"{' '.join(row['loadavg_before'])} / {' '.join(row['loadavg_after'])} |")
    names = [scenario.name for scenario in SLOW_SCENARIOS]
    lines += ["", "Normal requests answered within 2 s, per slow scenario:", "",
              "| scenario | " + " | ".join(row["candidate"] for row in rows) + " |",
              "|---|" + "---:|" * len(rows)]
    for name in names:
        cells = []
        for row in rows:
            match = next((r for r in row["slow"] if r["scenario"] == name), None)
            if match is None:
                cells.append("-")
                continue
            ended = ", ".join(f"{count} {kind}" for kind, count in sorted(match["held_outcomes"].items()))
            cells.append(f"{match['within_2s']}{' (' + ended + ')' if ended else ''}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for row in rows:
        lines += ["", f"### {row['candidate']}", "", format_slow(row["slow"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model (default: the bundled one)")
    parser.add_argument("--candidates", default="buffered,gthread,waitress,gevent,nginx")
    parser.add_argument("--base-src", help="src/ of the code before the buffering worker (gthread, nginx)")
    parser.add_argument("--site", action="append", default=[], help="folder with waitress / gevent installed")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds at 1 and at 8 clients")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the load rows over all candidates")
    parser.add_argument("--slow-duration", type=float, default=12.0, help="seconds of each slow scenario")
    parser.add_argument("--scenarios", help="comma-separated words: run only the slow scenarios whose name "
                                             "holds one (default: all)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    if any(n in ("gthread", "nginx") for n in names) and not args.base_src:
        parser.error("gthread and nginx need --base-src")
    image, _, _ = photo_bytes(None, 320)
    body, content_type = multipart([("image", "photo.jpg", image)])
    work = Path(tempfile.mkdtemp(prefix="serve-fronts-"))
    rows = []
    try:
        table = candidates(args, work)
        rows = measure_all([table[name] for name in names], work, args, body, content_type,
                           lambda text: print(text, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_rows(rows))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
