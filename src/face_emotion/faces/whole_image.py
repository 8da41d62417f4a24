"""The "none" detector: the whole image is the face (for photos that are already face crops).

Its one meaning everywhere: the Predictor feeds such an image whole, exactly as training and
`evaluate` feed face crops, with no margin or alignment applied to a whole-image box.
"""

from __future__ import annotations

from PIL import Image

from face_emotion.faces.base import Face
from face_emotion.faces.registry import register_detector


@register_detector("none")
class WholeImageDetector:
    name = "none"
    whole_image = True  # the Predictor uses the image itself as the crop

    def detect(self, image: Image.Image) -> list[Face]:
        return [Face((0, 0, image.width, image.height), 1.0, None)]
