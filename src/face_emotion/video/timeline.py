"""The probabilities of each track over time, as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from face_emotion.video.summary import TrackSeries


def timeline_figure(series: dict[int, TrackSeries], classes: tuple[str, ...], *, title: str = ""):
    """One panel per track, one line per emotion; an empty panel says that no face was found.
    ``title`` is a caption under the panels (the clip's path)."""
    from face_emotion.errors import require_extra

    require_extra("video", "--timeline", ("matplotlib",))
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window or need a display
    import matplotlib.pyplot as plt

    tracks = [series[k] for k in sorted(series)]
    rows = max(1, len(tracks))
    figure, axes = plt.subplots(rows, 1, figsize=(9, 1.0 + 2.0 * rows), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, track in zip(axes[:, 0], tracks, strict=False):  # no track: one panel, left empty
        probs = np.stack(track.probs)
        for i, name in enumerate(classes):
            ax.plot(track.times_s, probs[:, i], label=name, color=colours(i % 10), linewidth=1.4)
        # A little room above 1 and below 0: a line at a certainty of 1 (or 0) is drawn inside the
        # frame, not under its edge.
        ax.set_ylim(-0.04, 1.04)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel(f"face {track.track_id}")
        ax.grid(alpha=0.3)
    if not tracks:
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel("time (s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=min(len(classes), 7), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    if title:
        # Under the x-axis label, in the figure's own space; savefig's tight box takes it in whole.
        label = axes[-1, 0].xaxis.label
        figure.canvas.draw()
        below = label.get_window_extent().transformed(figure.transFigure.inverted()).y0
        figure.text(0.01, below - 0.01, title, ha="left", va="top", fontsize=9)
    return figure


def plot_timeline(series: dict[int, TrackSeries], classes: tuple[str, ...], target: Path, *, title: str = "") -> None:
    """The timeline figure as a PNG. Saved with a tight box: a caption wider than the figure (a deep
    path) widens the picture rather than being cut off."""
    import matplotlib.pyplot as plt

    figure = timeline_figure(series, classes, title=title)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100, bbox_inches="tight", pad_inches=0.15)
    plt.close(figure)
