"""`face-emotion evaluate`."""

from __future__ import annotations

import json
import sys

import click


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model_path",
              help="Run folder, .safetensors or .onnx (fp32 or int8) file (default: the bundled model).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--no-detect", is_flag=True, help="Images are face crops already: the whole image is the face.")
@click.option("--detector", help="Face detector name (default: the package default).")
@click.option("--tta", is_flag=True, help="Average each face's probabilities with its mirror image's.")
@click.option("--batch-size", default=64, show_default=True, type=int)
def evaluate(data_dir, model_path, as_json, no_detect, detector, tta, batch_size) -> None:
    """Score a model (default: the bundled one) on DATA_DIR (folder per class; its test/ split if any).

    Without --no-detect, the largest face of each image is detected and cropped as in `predict`;
    an image without a face counts as a wrong answer and is listed.
    """
    from face_emotion.evaluation.evaluate import evaluate_folder
    from face_emotion.inference.results import plural

    metrics = evaluate_folder(model_path, data_dir, detect=not no_detect, detector=detector,
                              batch_size=batch_size, progress=not as_json, tta=tta)
    seen = metrics["model_training_images"]
    if seen:
        click.echo(f"warning: {seen} of {metrics['n_images']} images were in this model's training split; "
                   f"these scores overstate what it does on new photos", err=True)
    if as_json:
        json.dump(metrics, sys.stdout)
        sys.stdout.write("\n")
        return
    missed = metrics["no_face"]["images"]
    click.echo(f"{plural(metrics['n_images'], 'image')}, classes {metrics['classes']}"
               + (f"; no face found in {missed} (counted as wrong)" if missed else ""))
    unscored = metrics["unscored_model_classes"]
    if unscored:
        scored, known = len(metrics["classes"]), len(metrics["model_classes"])
        click.echo(f"scored as a choice among these {scored} of the model's {known} classes (its probabilities "
                   f"renormalised over them); the folder has no images of {', '.join(unscored)}, so these "
                   f"figures are not those of a {known}-way choice")
    click.echo(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  ECE {metrics['ece']:.4f}")
    for name, row in metrics["per_class"].items():
        click.echo(f"  {name:>10}: precision {row['precision']:.3f} recall {row['recall']:.3f} "
                   f"f1 {row['f1']:.3f} support {row['support']}")
    for label, info in metrics["skipped_classes"].items():
        click.echo(f"skipped class {label}: {info['images']} images ({info['reason']})", err=True)
    for item in metrics["skipped"]:
        click.echo(f"skipped {item['path']}: {item['reason']}", err=True)
    for item in metrics["no_face"]["files"]:
        click.echo(f"no face: {item['path']} ({item['reason']})", err=True)

