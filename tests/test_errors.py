"""Every error a user can meet is a FaceEmotionError: one line in the CLI, JSON with a code in the API."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import face_emotion
from face_emotion.errors import FaceEmotionError


def test_every_exception_class_of_the_package_is_a_face_emotion_error():
    outside = []
    for info in pkgutil.walk_packages(face_emotion.__path__, "face_emotion."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name
                    and not issubclass(value, FaceEmotionError)):
                outside.append(f"{info.name}.{name}")
    assert not outside, f"exceptions outside FaceEmotionError: {outside}"


def test_codes_are_stable_snake_case_names():
    import re

    seen = [cls for cls in _subclasses(FaceEmotionError)]
    assert len(seen) > 10
    for cls in seen:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code), (cls, cls.code)


def _subclasses(cls):
    for info in pkgutil.walk_packages(face_emotion.__path__, "face_emotion."):
        importlib.import_module(info.name)
    stack, found = [cls], []
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found
