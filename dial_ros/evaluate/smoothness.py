"""Smoothness of a joint command stream: largest step per command and jerk at chunk switches.

From what the controller actually commanded, one command per tick at ``rate_hz``: the step
of command i is max_j |q_i - q_(i-1)| (rad); the jerk is the third difference
max_j |q_(i+3) - 3 q_(i+2) + 3 q_(i+1) - q_i| * rate^3 (rad/s^3). Switch jerk takes the
third differences that touch a window of ``window_s`` after each chunk switch (the first
command at or after its arrival, and the three before it). No ROS here.
"""
import numpy as np


def command_smoothness(commands, rate_hz, switches, window_s=0.05):
    """Smoothness of one episode.

    ``commands``: (N, J) joint positions in command order; ``switches``: command indices
    where a new chunk took over. Returns {commands, switches, max_step_rad,
    switch_step_max_rad, jerk_p99, switch_jerk_max, switch_jerk_p99} (jerks in rad/s^3;
    None where there is too little data).
    """
    q = np.asarray(commands, np.float64)
    if q.ndim != 2:
        raise ValueError(f'commands: expected an (N, J) array, got shape {q.shape}')
    if not rate_hz > 0:
        raise ValueError(f'rate_hz: must be > 0, got {rate_hz}')
    n = len(q)
    switches = sorted({int(s) for s in switches if 0 < s < n})
    steps = np.abs(np.diff(q, axis=0)).max(axis=1) if n > 1 else np.zeros(0)
    jerk = (np.abs(np.diff(q, n=3, axis=0)).max(axis=1) * rate_hz ** 3 if n > 3
            else np.zeros(0))
    after = max(1, int(round(window_s * rate_hz)))
    near = np.zeros(len(jerk), bool)
    step_near = np.zeros(len(steps), bool)
    for s in switches:
        near[max(0, s - 3):min(len(jerk), s + after)] = True
        step_near[max(0, s - 1):min(len(steps), s - 1 + after)] = True

    def stat(values, fn):
        return float(fn(values)) if len(values) else None
    return {'commands': n, 'switches': len(switches),
            'max_step_rad': stat(steps, np.max),
            'switch_step_max_rad': stat(steps[step_near], np.max),
            'jerk_p99': stat(jerk, lambda v: np.percentile(v, 99)),
            'switch_jerk_max': stat(jerk[near], np.max),
            'switch_jerk_p99': stat(jerk[near], lambda v: np.percentile(v, 99))}


def switch_indices(command_times, switch_times):
    """Index of the first command received at or after each switch (both sorted times)."""
    return np.searchsorted(np.asarray(command_times), np.asarray(switch_times)).tolist()


SUMMARY_MAX = ('max_step_rad', 'switch_step_max_rad', 'switch_jerk_max')


def summarize_smoothness(episodes):
    """Over episodes with a ``smoothness`` dict: the largest step and switch jerk, and the
    median over episodes of the per-episode switch jerk p99 (rad/s^3)."""
    found = [e['smoothness'] for e in episodes if e.get('smoothness')]
    out = {}
    for key in SUMMARY_MAX:
        values = [s[key] for s in found if s.get(key) is not None]
        out[key] = max(values) if values else None
    p99 = [s['switch_jerk_p99'] for s in found if s.get('switch_jerk_p99') is not None]
    out['switch_jerk_p99_median'] = float(np.median(p99)) if p99 else None
    out['switches'] = sum(s['switches'] for s in found)
    return out
