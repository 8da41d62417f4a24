"""Canonical emotion class names and the folder aliases that map onto them.

Datasets name the same emotion differently (FER2013 says ``angry``, AffectNet ``anger``, the
original Kaggle set ``happy``); every name that enters the project passes through
:func:`canonical_class` so a model trained on one dataset can be scored on another.
"""

from __future__ import annotations

import re

from face_emotion.errors import InvalidArgumentError

CANONICAL_CLASSES = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "pain",
    "sadness",
    "surprise",
)

# Lower-case, punctuation-free spellings -> canonical name.
_ALIASES = {
    "anger": "anger", "angry": "anger", "mad": "anger", "rage": "anger",
    "contempt": "contempt", "contemptuous": "contempt",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fright": "fear",
    "happiness": "happiness", "happy": "happiness", "joy": "happiness", "joyful": "happiness",
    "smile": "happiness", "smiling": "happiness",
    "neutral": "neutral", "calm": "neutral", "none": "neutral",
    "pain": "pain", "painful": "pain", "hurt": "pain",
    "sadness": "sadness", "sad": "sadness", "sorrow": "sadness", "unhappy": "sadness",
    "surprise": "surprise", "surprised": "surprise", "surprising": "surprise",
}


def _key(name: str) -> str:
    # "Surprised ", "SURPRISE", "03_happy" style prefixes are common in hand-made datasets.
    key = re.sub(r"[^a-z]", "", name.strip().lower())
    return key


def canonical_class(name: str) -> str:
    """Map a folder or user-supplied class name to its canonical spelling.

    Unknown names are kept (lower-cased) so users can train on classes we have never heard of.
    """
    key = _key(name)
    return _ALIASES.get(key, name.strip().lower())


def parse_class_list(text: str) -> list[str]:
    """Parse ``--classes a,b,c`` into canonical names, keeping the user's order."""
    names = [canonical_class(part) for part in text.split(",") if part.strip()]
    if not names:
        raise InvalidArgumentError("--classes is empty: give names separated by commas, e.g. anger,happiness")
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise InvalidArgumentError(f"--classes names the same class twice after alias mapping: {sorted(duplicates)}")
    return names
