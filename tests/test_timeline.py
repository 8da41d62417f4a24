"""The --timeline picture: every line and the caption inside it, none under the frame or cut off."""

from __future__ import annotations

import numpy as np
from PIL import Image

from face_emotion.video.summary import TrackSeries
from face_emotion.video.timeline import plot_timeline, timeline_figure

CLASSES = ("happiness", "sadness")
# A face certain of one emotion throughout: its lines run at exactly 1 and 0.
CERTAIN = {1: TrackSeries(1, [0.0, 0.5, 1.0], [np.array([1.0, 0.0])] * 3)}
CAPTION = "clips/" + "a-rather-long-folder-name/" * 6 + "clip.mp4"


def test_the_caption_is_inside_the_picture_whole(tmp_path):
    target = tmp_path / "timeline.png"
    plot_timeline(CERTAIN, CLASSES, target, title=CAPTION)
    pixels = np.asarray(Image.open(target).convert("L"))
    # The outermost rows and columns are background: nothing drawn runs off an edge.
    for edge in (pixels[:3], pixels[-3:], pixels[:, :3], pixels[:, -3:]):
        assert edge.min() > 240
    assert (pixels[-40:] < 100).any()  # the caption is there, at the bottom


def test_lines_at_zero_and_one_are_drawn_inside_the_frame():
    import matplotlib.pyplot as plt

    figure = timeline_figure(CERTAIN, CLASSES, title=CAPTION)
    try:
        for ax in figure.axes:
            low, high = ax.get_ylim()
            assert low < 0 and high > 1
    finally:
        plt.close(figure)
