"""Resample one episode onto the camera clock at a fixed rate.

Rules (all times on the clock chosen in ``bag.read_episode``):
- Frames: a grid at ``1/fps`` from the first camera image to the last; each grid point takes
  the nearest image (a camera faster than ``fps`` is thinned; a slower one or a gap repeats
  images, with a warning). A frame's time is its image's time.
- State: per joint, the ``/joint_states`` sample nearest in time (within ``tolerance``),
  matched by joint NAME into the embodiment's order; messages may carry any subset of joints
  in any order, and extra joints are ignored. Leading/trailing frames with no state in
  tolerance are trimmed; interior ones keep the nearest sample, with a warning.
- Action: when the recording has the teacher's clean labels (``/expert/action_label``: the
  executed commands carried DART noise) they are the action, each frame taking the label
  stamped with its image's stamp (the label answers that step; receive times would pair
  some frames with the next step's label), by joint name. Else the commands are the action
  (``action_align``): ``next`` (default) takes the first ``/dial/joint_commands`` at
  or after the frame time if one comes within ``tolerance``, else the command still in
  effect (the latest before). Action t is then the command issued in response to
  observation t, as in LeRobot recordings; ``previous`` always takes the latest command at
  or before the frame (zero-order hold). Frames before the first command have no action.
- Human episodes (tag ``source: human``): no action; wrist poses (18-D) as EEF state.
- ``trim_idle``: frames before the robot (or the human's wrists) first moves more than
  ``idle_threshold`` (rad or m) from the first frame are dropped, but for the last of them.
"""
import dataclasses
import logging

import numpy as np

from dial_ros.data.bag import EpisodeError, Topics

LOG = logging.getLogger(__name__)
ACTION_ALIGNS = ('next', 'previous')


@dataclasses.dataclass
class Frames:
    """One aligned episode: per-frame arrays of equal length."""

    image_index: np.ndarray   # (n,) index into RawEpisode.images
    times: np.ndarray         # (n,) s, the images' times
    state: np.ndarray         # (n, J) joint positions in embodiment order
    has_state: np.ndarray     # (n,) bool
    action: np.ndarray        # (n, J) commanded joint targets in embodiment order
    has_action: np.ndarray    # (n,) bool
    eef: np.ndarray           # (n, 18) wrist poses: right pos, rot6d, left pos, rot6d
    has_eef: np.ndarray       # (n,) bool
    source: str
    warnings: list

    def __len__(self):
        return len(self.image_index)


def nearest(times, query):
    """Index of the nearest entry of sorted ``times`` for each query, and the distance."""
    if len(times) == 1:
        i = np.zeros(len(query), int)
    else:
        i = np.clip(np.searchsorted(times, query), 1, len(times) - 1)
        i = np.where(np.abs(times[i - 1] - query) <= np.abs(times[i] - query), i - 1, i)
    return i, np.abs(times[i] - query)


def episode_source(raw):
    """The source tag, inferred when missing: ``human`` for wrist poses without commands."""
    source = raw.tags.get('source', '')
    if source:
        return source
    return 'human' if len(raw.wrists) and not raw.commands else 'unknown'


def align_episode(raw, spec, fps=20.0, tolerance=None, action_align='next', trim_idle=False,
                  idle_threshold=0.01, min_frames=2, topics=None):
    """``Frames`` of a ``RawEpisode`` for an ``EmbodimentSpec``; EpisodeError if unusable."""
    if action_align not in ACTION_ALIGNS:
        raise ValueError(f'action_align: {action_align!r} is not one of {ACTION_ALIGNS}')
    if fps <= 0:
        raise ValueError(f'fps: must be positive, got {fps}')
    topics = topics or Topics()
    tol = 1.0 / fps if tolerance is None else tolerance
    name, warnings = raw.name, list(raw.warnings)
    source = episode_source(raw)
    human = source == 'human'
    if not len(raw.images):
        raise EpisodeError(f'{name}: no images on {topics.image}')
    t_img = raw.image_times
    n = int(round((t_img[-1] - t_img[0]) * fps)) + 1
    image_index, _ = nearest(t_img, t_img[0] + np.arange(n) / fps)
    repeats = int(np.sum(np.diff(image_index) == 0))
    if repeats:
        gap = float(np.max(np.diff(t_img))) if len(t_img) > 1 else 0.0
        warnings.append(f'{repeats} of {n} frames repeat the previous image (camera slower '
                        f'than {fps:g} fps or dropped frames; longest gap {gap:.3f} s)')
    times = t_img[image_index]
    j = spec.num_joints
    state, has_state = np.zeros((n, j)), np.zeros(n, bool)
    action, has_action = np.zeros((n, j)), np.zeros(n, bool)
    eef, has_eef = np.zeros((n, 18)), np.zeros(n, bool)
    if len(raw.wrists):
        k, dt = nearest(raw.wrist_times, times)
        eef, has_eef = raw.wrists[k], dt <= tol
    if not human:
        state, has_state = _joint_state(raw, spec, times, tol, topics)
        if raw.labels:
            action, has_action = _labels(raw, spec, raw.image_stamps[image_index], warnings)
        else:
            action, has_action = _commands(raw, spec, times, tol, action_align, topics,
                                           warnings)
    valid = has_eef if human else has_state
    if human and not len(raw.wrists):
        valid = np.ones(n, bool)
    if not valid.any():
        raise EpisodeError(f'{name}: no frame has a {"wrist pose" if human else "joint state"}'
                           f' within {tol:.3f} s of an image')
    first, last = int(np.argmax(valid)), n - int(np.argmax(valid[::-1]))
    if first or last < n:
        warnings.append(f'trimmed {first} leading / {n - last} trailing frames without '
                        f'{"wrist poses" if human else "joint states"} in tolerance')
    holes = int(np.sum(~valid[first:last]))
    if holes:
        warnings.append(f'{holes} interior frames have no state within {tol:.3f} s'
                        + ('' if human else ' (the nearest sample is used)'))
        if not human:
            has_state[first:last] = True
    if trim_idle:
        if human:
            signal = np.concatenate([eef[:, :3], eef[:, 9:12]], 1)
        else:
            signal = np.concatenate([state, np.where(has_action[:, None], action, state)], 1)
        first = _first_motion(signal[first:last], idle_threshold, name, warnings) + first
    frames = Frames(image_index[first:last], times[first:last],
                    state[first:last].astype(np.float32), has_state[first:last],
                    action[first:last].astype(np.float32), has_action[first:last],
                    eef[first:last].astype(np.float32), has_eef[first:last], source, warnings)
    if len(frames) < min_frames:
        raise EpisodeError(f'{name}: {len(frames)} frames after alignment (need >= '
                           f'{min_frames})')
    return frames


def _joint_state(raw, spec, times, tol, topics):
    name = raw.name
    if not raw.joints:
        raise EpisodeError(f'{name}: missing topic {topics.joint_states} (robot episode)')
    missing = [j for j in spec.joint_names if j not in raw.joints]
    if missing:
        seen = sorted(raw.joints)
        raise EpisodeError(f'{name}: joint names do not match embodiment {spec.name}: '
                           f'{len(missing)} missing {missing[:4]} (recorded: {seen[:4]}...)')
    state = np.zeros((len(times), spec.num_joints))
    ok = np.ones(len(times), bool)
    for col, joint in enumerate(spec.joint_names):
        t, values = raw.joints[joint]
        k, dt = nearest(t, times)
        state[:, col] = values[k]
        ok &= dt <= tol
    return state, ok


STAMP_MATCH_S = 1e-4   # a label answers the frame whose stamp it carries (equal by design)


def _labels(raw, spec, frame_stamps, warnings):
    """The teacher's labels by stamp: each frame takes the label answering its image."""
    missing = [j for j in spec.joint_names if j not in raw.label_names]
    if missing:
        raise EpisodeError(f'{raw.name}: labels lack joints of embodiment {spec.name}: '
                           f'{missing[:4]}')
    cols = [raw.label_names.index(j) for j in spec.joint_names]
    labels = np.stack(raw.labels)[:, cols]
    k, dt = nearest(raw.label_stamps, frame_stamps)
    has = dt <= STAMP_MATCH_S
    if not has.all():
        warnings.append(f'{int(np.sum(~has))} frames have no label stamped with their image')
    return np.where(has[:, None], labels[k], 0.0), has


def _commands(raw, spec, times, tol, action_align, topics, warnings):
    name = raw.name
    n, j = len(times), spec.num_joints
    if not raw.commands:
        raise EpisodeError(f'{name}: missing topic {topics.commands} (source '
                           f'{raw.tags.get("source", "unknown")!r} needs actions)')
    keep = [i for i, c in enumerate(raw.commands) if c.shape == (j,)]
    if not keep:
        raise EpisodeError(f'{name}: {topics.commands} has {raw.commands[0].shape[0]} values, '
                           f'embodiment {spec.name} expects {j}')
    if len(keep) < len(raw.commands):
        warnings.append(f'dropped {len(raw.commands) - len(keep)} commands without {j} values')
    cmd_t = raw.command_times[keep]
    cmd = np.stack([raw.commands[i] for i in keep])
    if action_align == 'next':
        i = np.searchsorted(cmd_t, times, 'left')
        close = (i < len(cmd_t)) & (cmd_t[np.minimum(i, len(cmd_t) - 1)] - times <= tol)
        chosen = np.where(close, i, i - 1)
    else:
        chosen = np.searchsorted(cmd_t, times, 'right') - 1
    has = chosen >= 0
    if not has.all():
        warnings.append(f'{int(np.sum(~has))} frames before the first command have no action')
    action = np.zeros((n, j))
    action[has] = cmd[chosen[has]]
    return action, has


def _first_motion(signal, threshold, name, warnings):
    moved = np.max(np.abs(signal - signal[:1]), axis=1) > threshold
    if not moved.any():
        warnings.append(f'never moves more than {threshold:g} from its first frame; '
                        'nothing trimmed')
        return 0
    first = max(0, int(np.argmax(moved)) - 1)
    if first:
        LOG.info('%s: trimmed %d idle leading frames', name, first)
    return first
