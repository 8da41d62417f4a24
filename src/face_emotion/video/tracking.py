"""Faces across frames: follow boxes between detections, keep one id per person.

Two jobs, two tools:

- :class:`FaceFollower` moves each face's box (and eye landmarks, so crops stay aligned) from one
  analysed frame to the next with pyramidal Lucas-Kanade optical flow (OpenCV). The face
  detector is the costly stage, so it runs only every ``detect_interval_s``; flow on a few corner
  points inside each box costs a few milliseconds.
- :class:`FaceTracker` gives each box a ``track_id`` with ByteTrack (the maintained ``trackers``
  package): a Kalman filter per track predicts where each face goes next, and boxes are matched
  to the predictions by IoU with the Hungarian algorithm. The motion model is what keeps two faces
  from swapping ids when they cross.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from face_emotion.faces.base import Face

# A face unseen this long (turned away, hidden by another) comes back under a new id. The page's
# tracker (static/tracking.js) gets it from the page (ServerConfig.page_video_settings).
DEFAULT_LOST_TRACK_S = 1.0

# Below this many tracked points the flow estimate of a face is noise; the face is dropped until
# the next detection rather than drifting.
_MIN_POINTS = 4


class FaceFollower:
    """Moves faces from the previous frame to the next by the median optical flow inside each box.

    Flow runs on a greyscale copy at most ``max_side`` pixels wide or high: faces big enough to
    classify keep dozens of pixels there, and it is several times cheaper than full resolution.
    """

    def __init__(self, max_points: int = 40, max_side: int = 320) -> None:
        self.max_points = max_points
        self.max_side = max_side

    def prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """The frame as the follower wants it: (small greyscale copy, original pixels per small pixel)."""
        import cv2

        height, width = rgb.shape[:2]
        factor = min(1.0, self.max_side / max(height, width))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if factor < 1.0:
            grey = cv2.resize(grey, (max(1, round(width * factor)), max(1, round(height * factor))),
                              interpolation=cv2.INTER_AREA)
        return grey, 1.0 / factor

    def follow(self, prev: tuple[np.ndarray, float], cur: tuple[np.ndarray, float],
               faces: list[Face], image_size: tuple[int, int]) -> list[Face | None]:
        """Each face moved to ``cur`` (same order); None where it could not be followed."""
        import cv2

        (prev_grey, scale), (grey, _) = prev, cur
        points, owners = [], []
        for i, face in enumerate(faces):
            x, y, w, h = (v / scale for v in face.box_xywh)
            # The box's centre part: the face itself, without the background at the box edges that
            # would pull the estimate towards whatever is behind the person.
            mask = np.zeros_like(prev_grey)
            mask[int(y + h / 6): int(y + h - h / 6), int(x + w / 6): int(x + w - w / 6)] = 255
            found = cv2.goodFeaturesToTrack(prev_grey, maxCorners=self.max_points, qualityLevel=0.01,
                                            minDistance=max(2, int(min(w, h) / 12)), mask=mask)
            if found is not None:
                points.append(found.reshape(-1, 2))
                owners.append(np.full(len(found), i))
        if not points:
            return [None] * len(faces)
        start = np.concatenate(points).astype(np.float32)
        owner = np.concatenate(owners)
        moved, status, _ = cv2.calcOpticalFlowPyrLK(prev_grey, grey, start, None, winSize=(15, 15), maxLevel=2)
        # Forward-backward check (Kalal et al. 2010): a point that does not come back to where it
        # started was lost (occluded, or on a moving edge).
        back, status_back, _ = cv2.calcOpticalFlowPyrLK(grey, prev_grey, moved, None, winSize=(15, 15), maxLevel=2)
        good = (status.ravel() == 1) & (status_back.ravel() == 1) & (np.linalg.norm(back - start, axis=1) < 0.5)
        out: list[Face | None] = []
        for i, face in enumerate(faces):
            keep = good & (owner == i)
            if keep.sum() < _MIN_POINTS:
                out.append(None)
                continue
            out.append(_moved_face(face, start[keep] * scale, moved[keep] * scale, *image_size))
        return out


def _moved_face(face: Face, before: np.ndarray, after: np.ndarray, width: int, height: int) -> Face | None:
    shift = np.median(after - before, axis=0)
    centre_before = np.median(before, axis=0)
    # Scale: median ratio of the points' distances to their centre (a face coming closer grows).
    d0 = np.linalg.norm(before - centre_before, axis=1)
    d1 = np.linalg.norm(after - np.median(after, axis=0), axis=1)
    usable = d0 > 1.0
    scale = float(np.clip(np.median(d1[usable] / d0[usable]), 0.8, 1.25)) if usable.sum() >= 2 else 1.0

    def move(px: float, py: float) -> tuple[float, float]:
        return ((px - centre_before[0]) * scale + centre_before[0] + shift[0],
                (py - centre_before[1]) * scale + centre_before[1] + shift[1])

    x, y, w, h = face.box_xywh
    x0, y0 = move(x, y)
    x1, y1 = move(x + w, y + h)
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None  # left the frame
    landmarks = None if face.landmarks is None else {k: move(*p) for k, p in face.landmarks.items()}
    return Face((math.floor(x0 + 0.5), math.floor(y0 + 0.5), round(x1 - x0), round(y1 - y0)), face.score, landmarks)


@dataclass(frozen=True)
class TrackedFace:
    face: Face
    track_id: int | None  # 1, 2, ... in order of first appearance, from a face's first frame; None: untracked


class FaceTracker:
    """ByteTrack over face boxes, with timestamps so a lower --sample-fps keeps the motion model right.

    ``lost_track_s``: how long a face may go unseen (turned away, hidden by the other face) and
    come back under the same id.
    """

    def __init__(self, fps: float, lost_track_s: float = DEFAULT_LOST_TRACK_S, min_score: float = 0.5) -> None:
        fps = fps if fps and fps > 0 else 25.0
        # The library counts its buffer in frames at 30 fps: convert from seconds.
        self._tracker = _byte_track_numbering_first_frames()(
            lost_track_buffer=max(1, round(lost_track_s * 30.0)),
            frame_rate=fps,
            track_activation_threshold=min_score,
            high_conf_det_threshold=min_score,
            minimum_consecutive_frames=1,
            minimum_iou_threshold=0.1,
        )

    def update(self, faces: list[Face], time_s: float) -> list[TrackedFace]:
        import supervision as sv

        if faces:
            xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (f.box_xywh for f in faces)], dtype=np.float32)
            detections = sv.Detections(xyxy=xyxy, confidence=np.array([f.score for f in faces], dtype=np.float32),
                                       data={"index": np.arange(len(faces))})
        else:
            detections = sv.Detections.empty()
        result = self._tracker.update(detections, timestamp=float(time_s))
        ids = {int(i): int(t) for i, t in zip(result.data.get("index", []), result.tracker_id)}
        return [TrackedFace(face, None if ids.get(i, -1) < 0 else ids[i] + 1) for i, face in enumerate(faces)]


def _byte_track_numbering_first_frames():
    """ByteTrack that numbers a track on the frame it starts, not on its second one.

    The library answers -1 for a face's first frame even with minimum_consecutive_frames=1 (the
    new tracklet is mature at once, but its id is given on the next match): a null track_id on
    every face's first frame, and on the held-out clips no largest face kept one id on all its
    frames for that reason alone. Its spawning step (trackers 2.6.1, pinned) is redone here with
    the id given at once; a face whose score is below the activation threshold still gets -1.
    """
    from trackers import ByteTrackTracker
    from trackers.core.bytetrack.tracklet import ByteTrackTracklet

    class NumberingByteTrack(ByteTrackTracker):
        def _spawn_new_tracks(self, detection_boxes, confidences, unmatched_high_local, high_indices,
                              out_det_indices, out_tracker_ids) -> None:
            for local in unmatched_high_local:
                index = int(high_indices[local])
                out_det_indices.append(index)
                if float(confidences[index]) < self.track_activation_threshold:
                    out_tracker_ids.append(-1)
                    continue
                tracklet = ByteTrackTracklet(initial_bbox=detection_boxes[index],
                                             state_estimator_class=self.state_estimator_class)
                if tracklet.number_of_successful_consecutive_updates >= self.minimum_consecutive_frames:
                    tracklet.tracker_id = self._allocate_tracker_id()
                self.tracks.append(tracklet)
                out_tracker_ids.append(tracklet.tracker_id)

    return NumberingByteTrack
