"""face-emotion: facial emotion recognition you can train on your own labelled photos.

    from face_emotion import FaceEmotion
    result = FaceEmotion().predict("photo.jpg")
"""

from face_emotion.version import __version__

__all__ = ["FaceEmotion", "FaceEmotionError", "__version__"]


def __getattr__(name: str):
    # Lazily, so that `face-emotion --help` and `import face_emotion` stay cheap.
    if name == "FaceEmotion":
        from face_emotion.api import FaceEmotion

        return FaceEmotion
    if name == "FaceEmotionError":
        from face_emotion.errors import FaceEmotionError

        return FaceEmotionError
    raise AttributeError(f"module 'face_emotion' has no attribute {name!r}")
