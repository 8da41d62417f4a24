"""What the base install promises (issue 22): the light verbs never import an extra's libraries,
and a verb that needs an extra says which in one line.

Runs in both lanes: the full dev venv (extras present: the test blocks them in a child process,
as if they were not installed) and the base venv that scripts/check_base_install.sh builds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Import names of what the extras bring (face_emotion.errors.EXTRA_MODULES), plus their heavy deps.
HEAVY = ("torch", "torchvision", "pytorch_lightning", "lightning", "torchmetrics", "onnx", "matplotlib", "av",
         "trackers", "supervision", "pyarrow", "ray", "scipy", "pandas")


def _python(code: str, *, block: tuple[str, ...] = (), cwd: Path | None = None, timeout: float = 300):
    """Run ``code`` in a fresh interpreter where the ``block`` modules cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in block)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def _cli(*args: str, block: tuple[str, ...] = (), cwd: Path | None = None):
    code = ("from face_emotion.cli import main\n"
            f"main({list(args)!r}, prog_name='face-emotion')\n")
    return _python(code, block=block, cwd=cwd)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from support.photos import face_photos

    return next(p for p in face_photos(tmp_path_factory.mktemp("photos")) if p.name == "astronaut.png")


def test_light_verbs_import_nothing_an_extra_brings(photo, tmp_path):
    """predict, evaluate, export (onnx and web), the server app and the Python API, in one process."""
    data = tmp_path / "data" / "happiness"
    data.mkdir(parents=True)
    (data / "a.png").write_bytes(photo.read_bytes())
    code = f"""
import json, sys
from click.testing import CliRunner
from face_emotion.cli import main
runner = CliRunner()
for args in (["predict", {str(photo)!r}, "--json"], ["evaluate", {str(tmp_path / "data")!r}, "--json"],
             ["export", "--output", {str(tmp_path / "m.onnx")!r}],
             ["export", "--format", "web", "--output", {str(tmp_path / "site")!r}]):
    result = runner.invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
from face_emotion import FaceEmotion
assert FaceEmotion().predict({str(photo)!r}).faces
from face_emotion.server import create_app
client = create_app().test_client()
with open({str(photo)!r}, "rb") as f:
    assert client.post("/predict", data={{"image": (f, "a.png")}}).status_code == 200
assert client.get("/model-files/manifest.json").status_code == 200
heavy = {HEAVY!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy and sys.modules[m] is not None)))
"""
    # onnx is blocked: where installed, the model-file checks use it, and the base must do without.
    run = _python(code, block=("onnx",))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(("args", "extra"), [
    (["train", ".", "--out", "run"], "train"),
    (["batch", ".", "--output", "faces.parquet"], "batch"),
])
def test_a_verb_that_needs_an_extra_says_which_in_one_line(args, extra, tmp_path):
    run = _cli(*args, block=("torch", "pyarrow"), cwd=tmp_path)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"pip install 'face-emotion-kit[{extra}]'" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_clip_without_the_video_extra_is_one_line(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # recognised as a video by its bytes
    run = _cli("predict", str(clip), block=("av", "trackers", "supervision"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "pip install 'face-emotion-kit[video]'" in run.stderr and "Traceback" not in run.stderr


def test_server_video_without_the_extra_is_a_json_501(photo):
    code = """
from face_emotion.server import create_app
client = create_app().test_client()
import io
response = client.post("/predict/video", data={"video": (io.BytesIO(b"0" * 100), "a.mp4")})
print(response.status_code, response.get_json()["error"]["code"], response.get_json()["error"]["message"])
"""
    run = _python(code, block=("av", "trackers", "supervision"))
    assert run.returncode == 0, run.stderr[-2000:]
    status, code_, message = run.stdout.strip().splitlines()[-1].split(" ", 2)
    assert (status, code_) == ("501", "missing_extra") and "[video]" in message


@pytest.mark.parametrize("int8", [False, True])
def test_export_without_torch_copies_the_shipped_onnx(tmp_path, int8):
    out = tmp_path / "bundled.onnx"
    run = _cli("export", "--output", str(out), *(["--int8"] if int8 else []), block=("torch",))
    assert run.returncode == 0, run.stderr
    from face_emotion.models.files import BUNDLED_MODEL_DIR

    assert out.read_bytes() == (BUNDLED_MODEL_DIR / ("model.int8.onnx" if int8 else "model.onnx")).read_bytes()
    again = _cli("export", "--output", str(out), block=("torch",))
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_export_without_torch_refuses_a_model_it_cannot_copy(tmp_path, tiny_model_dir):
    # A .safetensors model with no ONNX form beside it needs torch to export.
    run = _cli("export", "--model", str(tiny_model_dir / "model.safetensors"), "--output", str(tmp_path / "t.onnx"),
               block=("torch",))
    assert run.returncode == 1 and "pip install 'face-emotion-kit[train]'" in run.stderr
    assert not (tmp_path / "t.onnx").exists()
