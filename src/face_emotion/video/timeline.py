"""The probabilities of each track over time, as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from face_emotion.video.summary import TrackSeries


def plot_timeline(series: dict[int, TrackSeries], classes: tuple[str, ...], target: Path, *, title: str = "") -> None:
    """One panel per track, one line per emotion; an empty panel says that no face was found."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window or need a display
    import matplotlib.pyplot as plt

    tracks = [series[k] for k in sorted(series)]
    rows = max(1, len(tracks))
    figure, axes = plt.subplots(rows, 1, figsize=(9, 1.0 + 2.0 * rows), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, track in zip(axes[:, 0], tracks):
        probs = np.stack(track.probs)
        for i, name in enumerate(classes):
            ax.plot(track.times_s, probs[:, i], label=name, color=colours(i % 10), linewidth=1.4)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"face {track.track_id}")
        ax.grid(alpha=0.3)
    if not tracks:
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel("time (s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=min(len(classes), 7), frameon=False)
    if title:
        figure.suptitle(title, y=0.02, fontsize=9)
    figure.tight_layout(rect=(0, 0.03, 1, 0.93))
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    plt.close(figure)
