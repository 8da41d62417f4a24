"""Frames analysed per second by the page's webcam mode, in a real headless Chromium, one face in view.

    python benchmarks/webcam_rate.py [--compare OTHER_SRC] [--model M] [--duration 10] [--workers N]
                                     [--device server|local|both] [--threads 1,2]

Chromium's fake camera plays a generated clip (skimage's astronaut, her face moving across the
frame, 640x480 at 30 frames/s) to the page served by `face-emotion serve` (gunicorn, default
workers) from this checkout's src/ -- and, with --compare, from another checkout's src/ too (e.g.
the code before a change), one after the other in the same run. Counted: answers to POST /predict
that arrived during the measured window (after a warm-up), or in local mode (?device=local, the
models run in the page) the frames the page analysed. Where the time of a frame goes is read
from the page's User Timing measures (capture+encode, upload+server, json, draw; in local mode
grab, detector-input, detector (whole frame), detector-roi (windows around the last faces),
classifier, ...) where the page emits them, and the server's own time from its log-free answer
field ``elapsed_ms``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

# The helpers the tests use too (a server launcher, free ports): tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.clips import fake_camera_clip  # noqa: E402
from support.server import ServerProcess, free_port, serve_command  # noqa: E402

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
CHROMIUM = Path(os.environ.get("FACE_EMOTION_CHROMIUM", "/usr/bin/chromium"))


def start_server(src: Path, model: str | None, workers: int, log: Path) -> ServerProcess:
    """`face-emotion serve` from the checkout ``src`` (its PYTHONPATH), once it answers /health."""
    port = free_port()
    options = (["--model", model] if model else []) + (["--workers", str(workers)] if workers else [])
    server = ServerProcess(serve_command(port, *options), port, log, env={"PYTHONPATH": str(src)},
                           name=f"the server from {src}")
    return server.start(timeout_s=300)


def descendants_cpu_s(root: int | None = None) -> float:
    """CPU seconds (user + system) used so far by the processes below ``root`` (default: this one),
    Chromium's among them: on a shared machine, CPU time per frame says what the page costs where
    frames/s says how much CPU it happened to get."""
    root = os.getpid() if root is None else root
    parents, times = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    below = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in below and pid not in below:
                below.add(pid)
                changed = True
    return sum(times[pid] for pid in below if pid != root and pid in times)


def measure_page(browser, url: str, warmup_s: float, duration_s: float, local: bool = False,
                 threads: int = 0) -> dict:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1100, "height": 850})
    page = context.new_page()
    page.goto(url + (f"/?device=local{f'&threads={threads}' if threads else ''}" if local else "/"))
    page.evaluate("() => performance.setResourceTimingBufferSize(100000)")
    if local:
        expect(page.locator("#device-status")).to_contain_text("Running in this browser", timeout=300_000)
    page.click("#mode-webcam")
    page.click("#camera-start")
    expect(page.locator("#camera-rate")).to_contain_text("frames/s", timeout=120_000)
    page.wait_for_timeout(warmup_s * 1000)
    # The page clears its measures now and then (to bound memory): an observer sees every one.
    start = page.evaluate("""() => {
        window.benchMeasures = [];
        new PerformanceObserver((list) => {
            for (const e of list.getEntries()) window.benchMeasures.push({name: e.name, startTime: e.startTime,
                                                                          duration: e.duration});
        }).observe({type: 'measure'});
        return performance.now();
    }""")
    cpu_start, load_start = descendants_cpu_s(), os.getloadavg()[0]
    page.wait_for_timeout(duration_s * 1000)
    cpu_s, load_end = descendants_cpu_s() - cpu_start, os.getloadavg()[0]
    # Answers to POST /predict that ended inside the window (Resource Timing: works for any page code).
    report = page.evaluate("""([start, local]) => {
        const end = performance.now();
        const predict = performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/predict') && e.responseEnd >= start && e.responseEnd <= end);
        const prefix = local ? 'local:' : 'webcam:';
        const stages = {};
        let frames = 0;
        for (const m of window.benchMeasures) {
            if (!m.name.startsWith(prefix)) continue;
            const name = m.name.slice(prefix.length);
            if (m.startTime + m.duration < start || m.startTime + m.duration > end) continue;
            if (name === 'frame') frames++;
            (stages[name] = stages[name] || []).push(m.duration);
        }
        return {end: end, count: local ? frames : predict.length, requests: predict.length,
                durations: predict.map(e => e.duration), stages: stages};
    }""", [start, local])
    label = page.inner_text("#camera-label")
    # Threads need a cross-origin isolated page (SharedArrayBuffer); the page says how many it runs.
    isolated = page.evaluate("() => self.crossOriginIsolated")
    device = page.inner_text("#device-status") if local else ""
    rate_text = page.inner_text("#camera-rate")
    page.click("#camera-stop")
    context.close()
    seconds = (report["end"] - start) / 1000.0
    stages = {name: statistics.median(values) for name, values in report["stages"].items() if values}
    counts = {name: len(values) for name, values in report["stages"].items()}
    if report["durations"]:
        stages["request (resource timing)"] = statistics.median(report["durations"])
    # In server mode the server's CPU is not below this process (it runs in its own session).
    return {"rate": report["count"] / seconds, "frames": report["count"], "label": label, "page_rate": rate_text,
            "stages": stages, "counts": counts, "predict_requests": report["requests"],
            "isolated": isolated, "device": device,
            "browser_cpu_ms_per_frame": 1000 * cpu_s / max(1, report["count"]), "load": (load_start, load_end)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", type=Path, help="another checkout's src/ to measure first (e.g. before a change)")
    parser.add_argument("--model", help="model for the server(s) (default: the bundled one)")
    parser.add_argument("--workers", type=int, default=0, help="gunicorn workers (default: serve's own)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--device", choices=["server", "local", "both"], default="server",
                        help="where the models run: the server (frames uploaded) or the browser (?device=local)")
    parser.add_argument("--threads", default="0",
                        help="ONNX Runtime Web threads in local mode, or several to compare in one run "
                             "(e.g. 1,2; default 0: the page's choice)")
    args = parser.parse_args(argv)
    modes = ["server", "local"] if args.device == "both" else [args.device]
    thread_counts = [int(n) for n in str(args.threads).split(",")]

    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="webcam-bench-"))
    clip = work / "face.y4m"
    fake_camera_clip(clip)
    sources = ([("compared", args.compare.resolve())] if args.compare else []) + [("this checkout", SRC)]
    chromium_args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-video-capture={clip}"]
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args, headless=True)
        try:
            for name, src in sources:
                with start_server(src, args.model, args.workers, work / f"{name.replace(' ', '_')}.log") as server:
                    for mode in modes:
                        for threads in (thread_counts if mode == "local" else [0]):
                            row = measure_page(browser, server.url, args.warmup, args.duration,
                                               local=mode == "local", threads=threads)
                            asked = f", threads={threads}" if threads else ""
                            rows.append((f"{name}, {mode}{asked}", src, row))
        finally:
            browser.close()

    print(f"\nFake camera: 640x480 clip, one face; {args.duration:g} s measured after {args.warmup:g} s; "
          f"CPUs: {os.cpu_count()}.\n")
    print("| code, where the models run | frames/s analysed | frames | /predict calls | browser CPU ms/frame | "
          "load avg | page says | last label | median ms per stage |")
    print("|---|---:|---:|---:|---:|---|---|---|---|")
    for name, src, row in rows:
        # n: how many measures a median is of (the whole-frame detector runs on some frames only).
        stages = ", ".join(f"{k} {v:.1f}" + (f" (n={row['counts'][k]})" if k in row["counts"] else "")
                           for k, v in row["stages"].items()) or "(page emits no measures)"
        print(f"| {name} ({src}) | {row['rate']:.1f} | {row['frames']} | {row['predict_requests']} | "
              f"{row['browser_cpu_ms_per_frame']:.0f} | {row['load'][0]:.1f}-{row['load'][1]:.1f} | "
              f"{row['page_rate']} | {row['label']} | {stages} |")
    for name, _, row in rows:
        if row["device"]:
            print(f"\n{name}: crossOriginIsolated {row['isolated']}; the page says: {row['device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
