"""Pair each latent intent with the frame it came from and the frame that came H steps later.

The foresight panel shows three panes side by side: the frame the intent was computed from
(its stamp), the decoded foresight, and the frame that actually arrived ``horizon`` steps
later. The camera and the intents arrive on separate topics, so this keeps a short buffer of
each and hands out a triple once the later frame is there. Times are the messages' stamps
(sim or robot time), never the arrival time. No rclpy here.
"""
import bisect
import collections

import numpy as np

LABEL_HEIGHT = 14         # px of the label strip above the panes (0 without labels)
JUMP_BACK_S = 1.0         # a stamp this far behind the newest is a reset (sim), not disorder


class ForesightPairer:
    """Buffers of (stamp, frame) and (stamp, horizon_s, intent); see the module docstring.

    buffer_s: how much camera history is kept (must exceed the foresight horizon);
    tolerance_s: how far a frame's stamp may be from the time wanted (half a frame period is
    enough for a steady camera); max_intents: pending intents kept (the newest).
    """

    def __init__(self, buffer_s=3.0, tolerance_s=0.03, max_intents=64):
        if buffer_s <= 0 or tolerance_s < 0:
            raise ValueError(f'buffer_s/tolerance_s: expected > 0 / >= 0, got {buffer_s} / '
                             f'{tolerance_s}')
        self.buffer_s, self.tolerance_s = buffer_s, tolerance_s
        self.stamps, self.frames = [], []
        self.intents = collections.deque(maxlen=max_intents)

    def add_frame(self, stamp, frame):
        if self.stamps and stamp < self.stamps[-1] - JUMP_BACK_S:
            self.clear()   # the clock went back (a sim reset): the old frames mean nothing
        if self.stamps and stamp <= self.stamps[-1]:
            return         # a duplicate or late frame: keep the buffer sorted
        self.stamps.append(stamp)
        self.frames.append(frame)
        drop = bisect.bisect_left(self.stamps, stamp - self.buffer_s)
        if drop:
            del self.stamps[:drop], self.frames[:drop]

    def add_intent(self, stamp, horizon_s, intent):
        self.intents.append((stamp, horizon_s, intent))

    def clear(self):
        self.stamps, self.frames = [], []
        self.intents.clear()

    def frame_at(self, stamp):
        """The buffered frame closest to ``stamp`` within the tolerance, or None."""
        i = bisect.bisect_left(self.stamps, stamp)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.stamps)),
                   key=lambda j: abs(self.stamps[j] - stamp), default=None)
        if best is None or abs(self.stamps[best] - stamp) > self.tolerance_s:
            return None
        return self.frames[best]

    def pop_ready(self):
        """(stamp, horizon_s, intent, frame now, frame later) of the newest intent whose later
        frame has arrived, or None. That intent and older ones leave the queue; intents whose
        frames have left the buffer (or never came) are dropped."""
        if not self.stamps:
            return None
        newest = self.stamps[-1]
        for k in range(len(self.intents) - 1, -1, -1):
            stamp, horizon_s, intent = self.intents[k]
            if stamp + horizon_s - self.tolerance_s > newest:
                continue   # its later frame is still to come
            now, later = self.frame_at(stamp), self.frame_at(stamp + horizon_s)
            for _ in range(k + 1):
                self.intents.popleft()
            if now is None or later is None:
                return None
            return stamp, horizon_s, intent, now, later
        return None


def compose_panel(panes, labels=None):
    """uint8 (S, S, 3) panes -> one (S [+ LABEL_HEIGHT], n*S, 3) image, labelled if asked."""
    size = panes[0].shape[0]
    for pane in panes:
        if pane.shape != (size, size, 3) or pane.dtype != np.uint8:
            raise ValueError(f'panes: expected uint8 ({size}, {size}, 3) each, got '
                             f'{pane.dtype} {pane.shape}')
    body = np.concatenate(panes, axis=1)
    if not labels:
        return body
    from PIL import Image, ImageDraw
    strip = Image.new('RGB', (body.shape[1], LABEL_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for k, text in enumerate(labels):
        draw.text((k * size + 3, 1), text, fill=(255, 255, 255))
    return np.concatenate([np.asarray(strip), body], axis=0)
