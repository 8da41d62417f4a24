"""Every ```python block of the README runs as written (in a folder with a group.jpg and a clip.mp4).

A block that reads a clip needs the [video] extra; in the base install's test lane it is skipped
with that reason, and runs everywhere else.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from support.photos import face_photos

    folder = tmp_path_factory.mktemp("readme")
    group = max(face_photos(folder / "photos"), key=lambda p: p.stat().st_size)
    (folder / "group.jpg").write_bytes(group.read_bytes())
    if importlib.util.find_spec("av") is not None:
        from support.clips import moving_face_clip

        moving_face_clip(folder / "clip.mp4", count=25)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs(index, folder):
    code = BLOCKS[index]
    if "clip.mp4" in code and importlib.util.find_spec("av") is None:
        pytest.skip("reads a clip: needs the [video] extra")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"README block {index} failed:\n{code}\n--- stderr:\n{run.stderr[-3000:]}"
    assert run.stdout.strip(), "a README block should show what it gives"
