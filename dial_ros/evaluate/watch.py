"""A run you can watch: one MP4 per episode and the lines that report it; no rclpy.

Each video frame is the head camera, with the newest foresight panel (what System-2
expects to see) beside it, scaled to the camera's height, when the run has one. H.264
yuv420p (``libx264``) plays in browsers and common players (the lossless ``libx264rgb`` of
the datasets does not); ``mpeg4`` where PyAV has no libx264.
"""
import logging
import time

import numpy as np

from dial_ros.data.video import VideoWriter

LOG = logging.getLogger(__name__)
PLAYABLE_CODECS = ('libx264', 'mpeg4')


def playable_codec():
    """The first of PLAYABLE_CODECS that PyAV can encode here."""
    import av
    for name in PLAYABLE_CODECS:
        try:
            av.codec.Codec(name, 'w')
            return name
        except Exception:  # noqa: BLE001 - PyAV raises several types for a missing codec
            continue
    raise ValueError(f'video: none of {list(PLAYABLE_CODECS)} can encode here')


def _even(frame):
    """Pad to even height and width with black (yuv420p subsamples 2x2)."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
    return frame


def _check_rgb(name, image):
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'{name}: expected uint8 (H, W, 3) RGB, got {image.dtype} '
                         f'{image.shape}')


def compose(camera, panel=None, panel_width=None):
    """Camera | panel (scaled to the camera's height; ``panel_width`` fixes its width).

    ``panel`` None with a ``panel_width``: a black panel (no foresight yet).
    """
    _check_rgb('camera', camera)
    if panel is None and not panel_width:
        return _even(camera)
    h = camera.shape[0]
    if panel is None:
        panel = np.zeros((h, panel_width, 3), np.uint8)
    else:
        _check_rgb('panel', panel)
        width = panel_width or max(1, round(panel.shape[1] * h / panel.shape[0]))
        if panel.shape[:2] != (h, width):
            from PIL import Image
            panel = np.asarray(Image.fromarray(panel).resize((width, h), Image.BILINEAR))
    return _even(np.concatenate([camera, panel], axis=1))


class EpisodeVideo:
    """One episode's MP4: frames at the camera rate; the layout is fixed by the first frame
    (a panel that appears later waits for the next episode)."""

    def __init__(self, path, fps, codec):
        self.path, self.fps, self.codec = path, fps, codec
        self.writer = None
        self.panel_width = None
        self.encode_s = 0.0
        self.t0, self.last_pts = None, -1

    def add(self, camera, panel=None, stamp_s=None):
        """Append a camera frame with the newest ``panel`` (or None). ``stamp_s``: the
        frame's time; frames lost on the way then leave a gap instead of speeding it up
        (a frame at or before the previous one's slot is dropped)."""
        pts = None
        if stamp_s is not None:
            self.t0 = stamp_s if self.t0 is None else self.t0
            pts = round((stamp_s - self.t0) * self.fps)
            if pts <= self.last_pts:
                return
            self.last_pts = pts
        tic = time.process_time()
        if self.writer is None:
            if panel is not None:
                h = camera.shape[0]
                self.panel_width = max(1, round(panel.shape[1] * h / panel.shape[0]))
            frame = compose(camera, panel, self.panel_width)
            # a keyframe every 2 s, not the datasets' every 2 frames: half the size, and a
            # viewer needs no random access to single frames
            self.writer = VideoWriter(self.path, self.fps, frame.shape[1], frame.shape[0],
                                      self.codec, options={'g': str(round(2 * self.fps))})
        else:
            frame = compose(camera, panel if self.panel_width else None, self.panel_width)
        self.writer.write([frame], None if pts is None else [pts])
        self.encode_s += time.process_time() - tic

    def close(self):
        """Finish the file; returns {path, frames, width, height} (frames 0: no file)."""
        if self.writer is None:
            return {'path': None, 'frames': 0, 'width': 0, 'height': 0}
        tic = time.process_time()
        self.writer.close()
        self.encode_s += time.process_time() - tic
        w = self.writer
        return {'path': str(self.path), 'frames': w.count, 'width': w.stream.width,
                'height': w.stream.height}


def episode_line(index, seed, result, video=None):
    """One line per episode: index, seed, outcome, time, task completion (and the video)."""
    if result is None:
        text = f'episode {index} seed {seed}: interrupted'
    else:
        outcome = 'success' if result['success'] else 'failure (timeout)'
        seconds = result['completion_s'] if result['success'] else result['duration_s']
        text = (f'episode {index} seed {seed}: {outcome} in {seconds:.1f} s, task completion '
                f'{100 * result["progress"]:.0f} %')
    if video and video['frames']:
        text += (f' -> {video["path"]} ({video["frames"]} frames '
                 f'{video["width"]}x{video["height"]})')
    return text


def summary_line(results, run_dir, wall_s, cpu_s):
    """The run's summary: episodes, successes, mean completion, and this process's CPU."""
    n = len(results)
    wins = [r for r in results if r['success']]
    text = f'run {run_dir}: {n} episode{"s" * (n != 1)}'
    if n:
        text += (f', {len(wins)} successes ({100 * len(wins) / n:.0f} %), mean task '
                 f'completion {100 * sum(r["progress"] for r in results) / n:.0f} %')
    if wins:
        text += f', mean success time {sum(r["completion_s"] for r in wins) / len(wins):.1f} s'
    return text + (f'; episode runner + video encoder CPU {cpu_s:.1f} s in {wall_s:.0f} s of '
                   f'episodes ({100 * cpu_s / max(wall_s, 1e-9):.1f} % of a core)')
