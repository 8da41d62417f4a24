"""`face-emotion export`: write an ONNX model (fp32 or int8) and print its self-check."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import click

from face_emotion.commands.common import fail as _fail


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@click.command()
@click.option("--model", "model_path", help="Run folder or .safetensors file (default: the bundled model).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "web"]), default="onnx", show_default=True,
              help="onnx: one model file; web: a static site that runs the model in the browser.")
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="File to write (.onnx), or with --format web a new folder.")
@click.option("--int8", is_flag=True, help="Quantise to int8 (ONNX Runtime static quantisation).")
@click.option("--calibration", "calibration_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of face crops to calibrate --int8 on (default: synthetic images, less accurate).")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(min=13))
@click.option("--json", "as_json", is_flag=True, help="Print the self-check as one JSON object.")
def export(model_path, fmt, output, int8, calibration_dir, opset, as_json) -> None:
    """Export a model for ONNX Runtime, check it against PyTorch, and report the check."""
    if calibration_dir is not None and not int8:
        _fail("--calibration is only used with --int8")
    if fmt == "web":
        from face_emotion.server.web_export import export_web

        site = export_web(model_path, output, int8=int8, calibration_dir=calibration_dir, opset=opset)
        click.echo(json.dumps(site.to_dict()) if as_json else
                   f"wrote {site.output}/ ({site.files} files, {_megabytes(site.bytes)}; model {site.model}, "
                   f"{'fp32' if site.quantization == 'none' else 'int8'} weights, detector {site.detector}): "
                   f"serve it from any static host (see {site.output}/HOSTING.md; to try it: "
                   f"cd {site.output} && python -m http.server 8000)")
        return
    if output.is_dir():
        _fail(f"{output} is a folder: give the .onnx file to write")
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnx") is None:
        _copy_shipped(model_path, output, int8=int8, calibration_dir=calibration_dir, as_json=as_json)
        return
    from face_emotion.inference.export import export_onnx

    result = export_onnx(model_path, output, int8=int8, opset=opset, calibration_dir=calibration_dir)
    if as_json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
        return
    click.echo(f"wrote {result.output} ({_megabytes(result.output_bytes)}; source {_megabytes(result.source_bytes)})")
    click.echo(f"fp32 check: max probability difference to PyTorch {result.fp32_max_abs_prob_diff:.1e} "
               f"over {result.fp32_check_inputs} inputs: ok")
    if result.int8:
        click.echo(f"int8: {result.quantization}")
        click.echo(f"int8 calibration: {result.calibration}")
        click.echo(f"int8 vs fp32: top-1 agreement {result.int8_top1_agreement:.1%} on {result.int8_check_inputs} "
                   f"images, max probability difference {result.int8_max_abs_prob_diff:.3f}; "
                   f"size {_megabytes(result.fp32_bytes)} -> {_megabytes(result.output_bytes)}")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)


def _copy_shipped(model_path, output: Path, *, int8: bool, calibration_dir, as_json: bool) -> None:
    """Without torch (the base install) there is nothing to export from: a model folder's own ONNX
    form (the bundled model ships fp32 and int8, each checked when it was made) is copied as it is."""
    from face_emotion.errors import require_extra
    from face_emotion.models.files import shipped_onnx

    shipped = None if calibration_dir is not None else shipped_onnx(model_path, int8=int8)
    if shipped is None:
        what = "exporting ONNX from a .safetensors model" + (" with --calibration" if calibration_dir else "")
        require_extra("train", what, ("torch", "onnx"))
    if output.exists():
        _fail(f"{output} exists: choose a new file name")
    if not output.parent.is_dir():
        _fail(f"no folder {output.parent} to write {output.name} into")
    shutil.copyfile(shipped, output)
    size = output.stat().st_size
    if as_json:
        json.dump({"output": str(output), "source": str(shipped), "output_bytes": size, "int8": int8,
                   "copied": True}, sys.stdout)
        sys.stdout.write("\n")
        return
    click.echo(f"wrote {output} ({_megabytes(size)}; copied from {shipped}, checked when it was made; "
               f"install face-emotion-kit[train] to export afresh)")
