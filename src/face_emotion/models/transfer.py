"""Starting a network from another face-emotion model: the backbone whole, head rows by class name."""

from __future__ import annotations

import logging

import torch

from face_emotion.errors import InvalidArgumentError
from face_emotion.models.backbones import create_network, get_backbone
from face_emotion.models.store import load_model

log = logging.getLogger(__name__)


def init_from_model(model: str, arch: str, classes: list[str], dropout: float) -> torch.nn.Module:
    """A network for ``classes`` that starts from an existing face-emotion model.

    The backbone is copied whole; each head row of a class the old model knows (by name) is
    copied, rows of new classes start from the usual random initialisation. Expression features
    learnt on tens of thousands of faces are a far better start for a small dataset than
    ImageNet's.
    """
    old_network, old_spec = load_model(model)  # "bundled", a run folder or a model file (models.files)
    if old_spec.architecture != arch:
        raise InvalidArgumentError(
            f"--init {model} is a {old_spec.architecture} model; pass --arch {old_spec.architecture} to start from it"
        )
    network = create_network(arch, len(classes), dropout, weights="none")
    head = get_backbone(arch).head_name
    old_state = old_network.state_dict()
    new_state = network.state_dict()
    for key, value in old_state.items():
        if not key.startswith(head + "."):
            new_state[key] = value.to(new_state[key].dtype)
    linear = [k for k in new_state if k.startswith(head + ".") and k.endswith(".weight")][-1]
    bias = linear[: -len("weight")] + "bias"
    for row, name in enumerate(classes):
        if name in old_spec.classes:
            old_row = old_spec.classes.index(name)
            new_state[linear][row] = old_state[linear][old_row].to(new_state[linear].dtype)
            new_state[bias][row] = old_state[bias][old_row].to(new_state[bias].dtype)
    network.load_state_dict(new_state)
    known = [c for c in classes if c in old_spec.classes]
    log.info("initialised from %s: backbone and %d of %d head rows (%s)", model, len(known), len(classes),
             ", ".join(known))
    return network


def with_head(network: torch.nn.Module, arch: str, num_classes: int, dropout: float) -> torch.nn.Module:
    """The same backbone weights under a freshly initialised head for ``num_classes``."""
    fresh = create_network(arch, num_classes, dropout, weights="none")
    head = get_backbone(arch).head_name
    state = {k: v for k, v in network.state_dict().items() if not k.startswith(head + ".")}
    fresh.load_state_dict(state, strict=False)
    return fresh
