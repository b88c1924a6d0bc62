"""Intervention segments of a recorded episode: where a teleop source drove; no rclpy.

The recorder tags an episode in which an operator (or the scripted expert in a DAgger round)
took over the controller with ``source: intervention`` and ``intervention_segments`` (JSON
``[[start, end], ...]``, seconds on the bag's receive clock). The conversion keeps each
segment as an episode of its own, as ``dial_ros.data.dagger`` does in process: the
policy's stretches carry no expert action, and its future frames show its own intent.
Each kept episode gets a sampling ``weight`` (``--intervention-weight``) that training uses
(``DialDataset.sample_weights``).
"""
import dataclasses
import json

import numpy as np

SOURCE = 'intervention'


def segments_of(tags):
    """[(start, end), ...] of an intervention episode's tags, or None for other episodes.

    ValueError names a malformed ``intervention_segments`` tag.
    """
    if tags.get('source') != SOURCE or 'intervention_segments' not in tags:
        return None
    text = tags['intervention_segments']
    try:
        spans = [(float(a), float(b)) for a, b in json.loads(text)]
    except (TypeError, ValueError) as err:
        raise ValueError(f'intervention_segments: {text!r} is not a JSON list of '
                         f'[start, end] pairs ({err})') from None
    if any(not b >= a for a, b in spans):
        raise ValueError(f'intervention_segments: {text!r} has a segment that ends before '
                         'it starts')
    return spans


def split_frames(frames, spans, min_frames=2):
    """The parts of an ``align.Frames`` whose times lie in ``spans``, each a ``Frames``.

    Parts shorter than ``min_frames`` are dropped (with a warning on the parts kept).
    """
    parts, dropped = [], 0
    for start, end in spans:
        index = np.flatnonzero((frames.times >= start) & (frames.times <= end))
        if len(index) < min_frames:
            dropped += 1
            continue
        fields = {f.name: getattr(frames, f.name)[index] if isinstance(
            getattr(frames, f.name), np.ndarray) else getattr(frames, f.name)
            for f in dataclasses.fields(frames)}
        fields['warnings'] = list(frames.warnings)
        parts.append(type(frames)(**fields))
    if dropped:
        for part in parts:
            part.warnings.append(f'{dropped} intervention segments shorter than {min_frames} '
                                 'frames dropped')
    return parts


def check_weight(weight):
    """``weight`` as a float > 0; ValueError naming it."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = float('nan')
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f'intervention_weight: {weight!r} must be a finite number > 0')
    return value
