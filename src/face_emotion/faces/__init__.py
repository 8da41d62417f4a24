"""Faces: find them in a photo (boxes in pixels) and cut them out for the model.

``create_detector()`` gives the default detector; ``crop_face()`` turns a Face into the square crop
the eval transform expects. Detector libraries (OpenCV, onnxruntime, mediapipe) are imported
only when a detector is created, so importing this package stays cheap.
"""

# Importing the detector modules registers them; each imports its library only when built.
from face_emotion.faces.base import DetectorUnavailableError, Face, FaceDetector
from face_emotion.faces.centerface_detector import CenterFaceDetector
from face_emotion.faces.crop import crop_face
from face_emotion.faces.haar_detector import HaarDetector
from face_emotion.faces.mediapipe_detector import MediaPipeDetector
from face_emotion.faces.registry import DEFAULT_DETECTOR, available_detectors, create_detector, register_detector
from face_emotion.faces.whole_image import WholeImageDetector

__all__ = [
    "DEFAULT_DETECTOR",
    "CenterFaceDetector",
    "DetectorUnavailableError",
    "Face",
    "FaceDetector",
    "HaarDetector",
    "MediaPipeDetector",
    "WholeImageDetector",
    "available_detectors",
    "create_detector",
    "crop_face",
    "register_detector",
]
