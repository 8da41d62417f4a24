"""Soak, load, hostile uploads over the wire and a killed worker, against a real gunicorn server.

`face-emotion serve --model TINY --workers 2` runs as a subprocess on a free loopback port, and
benchmarks/reliability.py drives it: the same phases as its full-size run, at a scale that fits the
test suite (a few hundred requests, a few seconds of load). Every request loop is bounded in count
and time; the server is stopped at the end whatever happens.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reliability.py"


def load_reliability():
    spec = importlib.util.spec_from_file_location("reliability", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("reliability", module)  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


reliability = load_reliability()


@pytest.fixture(scope="module")
def report(tiny_model_dir, tmp_path_factory):
    """One server through every phase; the tests below read the report's checks and figures."""
    scale = reliability.Scale(warmup=48, requests=240, clients=8, duration_s=4.0, kill_duration_s=5.0)
    lines: list[str] = []
    try:
        result = reliability.run(str(tiny_model_dir), scale, workers=2, threads=4, detector="none",
                                 log=lines.append, root=tmp_path_factory.mktemp("reliability"))
    except RuntimeError as error:  # the server did not start: show its log
        pytest.fail(str(error))
    print(reliability.format_report(result))  # shown with -s, and on failure
    return result


def failed(report, prefix: str) -> list[str]:
    checks = {name: ok for name, ok in report.checks.items() if name.startswith(prefix)}
    assert checks, f"no {prefix!r} checks ran"
    return [name for name, ok in checks.items() if not ok]


def test_hostile_uploads_over_the_wire_get_clean_4xx_answers(report):
    hostile = report.phases["hostile"]
    assert not failed(report, "hostile"), (failed(report, "hostile"), hostile["per_payload"])
    # The 30 MB upload is answered 413 before it is all sent; the client reads that answer.
    assert hostile["per_payload"]["random-30MB"] == "413 ok"
    assert hostile["per_payload"]["png-bomb-30000"] == "413 ok"


def test_soak_keeps_memory_fds_and_threads_flat(report):
    soak = report.resources["soak"]
    assert not failed(report, "soak"), (failed(report, "soak"), report.phases["soak"]["examples"], soak)
    assert report.phases["soak"]["requests"] == 240
    assert soak["rss_growth_pct"] < 10
    assert soak["after"]["fds"] <= soak["before"]["fds"]
    assert soak["after"]["threads"] <= soak["middle"]["threads"]


def test_load_has_zero_errors(report):
    load = report.phases["load"]
    assert not failed(report, "load"), load["examples"]
    assert load["requests"] > 0 and load["ok"] == load["requests"]
    assert load["p95_ms"] is not None


def test_a_killed_worker_is_replaced_and_nothing_fails_silently(report):
    kill = report.phases["kill"]
    assert not failed(report, "kill"), (failed(report, "kill"), kill)
    assert kill["bad"] == 0
    assert kill["killed_pid"] not in kill["workers_after"] and len(kill["workers_after"]) == 2
    # Failures, if any, are the requests in flight at the kill, not a lasting outage.
    assert kill["last_failure_s_after_kill"] < 5


def test_no_request_wrote_a_file(report):
    assert not failed(report, "no file written"), report.resources["files_written"]
