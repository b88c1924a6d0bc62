"""One recorded episode (a rosbag2 directory) as arrays; no rclpy.

The messages come from :func:`dial_ros.bags.reader.scan_messages` (the project's one bag
reader: closed bags, recordings that were never closed, truncated segments, sqlite3 bags)
and are deserialised with the project's type store (ROS 2 Kilted + ``msg/*.msg``,
:mod:`dial_ros.bags.types`); images decode with :mod:`dial_ros.codecs`. This module maps the
topics of an episode to arrays and picks the clock.

One bag directory is one episode. Its tags come from ``custom_data`` in ``metadata.yaml``
(task, instruction, source, operator, outcome, robot, embodiment). What the reader had to
work around (no metadata.yaml, a damaged segment, bad messages) ends up in the episode's
``warnings``. Errors are ``EpisodeError`` naming the episode.
"""
import dataclasses
import glob
import pathlib

import numpy as np
import yaml

from dial_ros import codecs, topics as names
from dial_ros.bags.metadata import OUTCOME_ALIASES
from dial_ros.bags.reader import scan_messages
from dial_ros.bags.types import default_types

IMAGE_ENCODINGS = tuple(codecs.CHANNELS)  # recordings may hold any of them


class EpisodeError(ValueError):
    """An episode that cannot be converted; the message starts with the episode's name."""


@dataclasses.dataclass
class Topics:
    """Topic names read from a recording (others are ignored)."""

    image: str = names.TOPIC_IMAGE
    joint_states: str = names.TOPIC_JOINT_STATES
    commands: str = names.TOPIC_COMMAND
    # the teacher's clean targets when the executed commands carry DART noise (expert node):
    # sensor_msgs/JointState stamped with the joint state (= camera frame) they answer
    labels: str = names.TOPIC_EXPERT_LABEL
    instruction: str = names.TOPIC_INSTRUCTION
    wrists: str = names.TOPIC_WRISTS


@dataclasses.dataclass
class RawEpisode:
    """The streams of one episode; times in seconds on one clock (see ``read_episode``)."""

    name: str
    path: pathlib.Path
    tags: dict
    image_times: np.ndarray
    images: list
    joints: dict            # joint name -> (times (n,), positions (n,))
    command_times: np.ndarray
    commands: list          # 1-D float arrays, as recorded
    image_stamps: np.ndarray   # header stamps of the images (s), in image order
    label_stamps: np.ndarray   # header stamps of the labels: the frame each one answers
    label_names: list          # joint names of the labels (from their first message)
    labels: list            # the teacher's clean targets (1-D float arrays), if recorded
    instructions: list      # [(time, text)]
    wrist_times: np.ndarray
    wrists: np.ndarray      # (n, 18): right pos, right rot6d, left pos, left rot6d
    warnings: list = dataclasses.field(default_factory=list)


def find_bags(patterns):
    """Bag directories from paths or globs; a folder of bags is searched recursively."""
    found = []
    for pattern in patterns:
        path = pathlib.Path(pattern)
        matches = [path] if path.exists() else [pathlib.Path(p)
                                                for p in sorted(glob.glob(str(pattern)))]
        if not matches:
            raise ValueError(f'--bags: nothing matches {pattern!r}')
        for match in matches:
            if _is_bag(match):
                found.append(match)
            elif match.is_dir():
                found += sorted({p.parent for p in match.rglob('*')
                                 if p.suffix in ('.mcap', '.db3') or p.name == 'metadata.yaml'})
    unique = []
    for bag in found:
        if bag not in unique:
            unique.append(bag)
    return unique


def _is_bag(path):
    return path.is_dir() and ((path / 'metadata.yaml').is_file()
                              or any(path.glob('*.mcap')) or any(path.glob('*.db3')))


def read_tags(path):
    """``custom_data`` of a bag's metadata.yaml (empty when there is none)."""
    meta = path / 'metadata.yaml'
    if not meta.is_file():
        return {}
    info = (yaml.safe_load(meta.read_text()) or {}).get('rosbag2_bagfile_information', {})
    tags = {str(k): str(v) for k, v in (info.get('custom_data') or {}).items()}
    if 'outcome' in tags:
        outcome = tags['outcome'].strip().lower()
        tags['outcome'] = OUTCOME_ALIASES.get(outcome, outcome)
    if 'source' in tags:
        tags['source'] = tags['source'].strip().lower()
    return tags


def stamp(msg):
    """header.stamp in seconds."""
    return codecs.stamp_to_sec(msg.header.stamp)


def image_to_rgb(msg, msgtype):
    """uint8 (H, W, 3) RGB (a copy) from an Image of any encoding or a CompressedImage."""
    if msgtype.endswith('CompressedImage'):
        return codecs.compressed_to_rgb(msg)
    return np.array(codecs.image_to_rgb(msg, encodings=IMAGE_ENCODINGS))


def quat_to_rot6d(q):
    """Quaternion(s) (x, y, z, w) -> 6-D rotation: the first two columns of the matrix."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True).clip(1e-12)
    x, y, z, w = np.moveaxis(q, -1, 0)
    col0 = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], -1)
    col1 = np.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], -1)
    return np.concatenate([col0, col1], -1)


def _pose18(msg):
    if len(msg.poses) < 2:
        raise ValueError(f'PoseArray.poses: {len(msg.poses)} poses, need [right, left]')
    out = []
    for pose in msg.poses[:2]:
        p, o = pose.position, pose.orientation
        out += [p.x, p.y, p.z, *quat_to_rot6d([o.x, o.y, o.z, o.w])]
    return np.asarray(out)


class _Collector:
    """Message handlers; times kept as (bag, header) pairs until the clock is chosen."""

    def __init__(self, topics):
        self.topics = topics
        self.images, self.image_t = [], []
        self.joints = {}
        self.commands, self.command_t = [], []
        self.labels, self.label_t, self.label_names = [], [], []
        self.instructions = []
        self.wrists, self.wrist_t = [], []
        self.bad = {}

    def __call__(self, topic, msgtype, t_bag, msg):
        tp = self.topics
        try:
            if topic == tp.image:
                self.images.append(image_to_rgb(msg, msgtype))
                self.image_t.append((t_bag, stamp(msg)))
            elif topic == tp.joint_states:
                t = (t_bag, stamp(msg))
                for name, pos in zip(msg.name, msg.position):
                    self.joints.setdefault(name, []).append((*t, float(pos)))
            elif topic == tp.commands:
                self.commands.append(np.asarray(msg.data, np.float64))
                self.command_t.append(t_bag)
            elif topic == tp.labels:
                if list(msg.name) != (self.label_names or list(msg.name)):
                    raise ValueError('label joint names changed within the episode')
                self.label_names = list(msg.name)
                self.labels.append(np.asarray(msg.position, np.float64))
                self.label_t.append(stamp(msg))
            elif topic == tp.instruction:
                self.instructions.append((t_bag, msg.data))
            elif topic == tp.wrists:
                self.wrists.append(_pose18(msg))
                self.wrist_t.append((t_bag, stamp(msg)))
        except (ValueError, AttributeError) as err:
            self.bad.setdefault(topic, [0, str(err)])[0] += 1


def read_episode(path, topics=None, clock='bag'):
    """Read one episode bag directory.

    clock: ``bag`` uses the recorder's receive time for every topic (one clock for all, the
    default); ``header`` uses header stamps for stamped topics (image, joint states, wrist
    poses) shifted onto the bag clock by the image topic's median offset, and receive time
    for unstamped ones (commands, instruction).
    """
    path = pathlib.Path(path)
    name = path.name
    topics = topics or Topics()
    if clock not in ('bag', 'header'):
        raise ValueError(f'clock: {clock!r} is not one of (bag, header)')
    warnings = []
    tags = read_tags(path)
    if tags.get('state') == 'failed':
        warnings.append('the recorder reported a write failure; using what was recorded')
    got = _Collector(topics)
    types = default_types()
    count = 0
    try:
        for topic, msgtype, t_ns, raw in scan_messages(path, dataclasses.astuple(topics),
                                                       warnings):
            count += 1
            try:
                msg = types.deserialize(raw, msgtype)
            except Exception as err:  # unknown type or a corrupt message: count it
                got.bad.setdefault(topic, [0, f'{type(err).__name__}: {err}'])[0] += 1
                continue
            got(topic, msgtype, t_ns * 1e-9, msg)
    except Exception as err:
        if not count:
            raise EpisodeError(f'{name}: unreadable bag ({type(err).__name__}: {err})') from err
        warnings.append(f'truncated: read {count} messages, then {type(err).__name__}: {err}')
    for topic, (n, reason) in got.bad.items():
        warnings.append(f'{topic}: skipped {n} bad messages ({reason})')
    return _finish(name, path, tags, got, clock, warnings)


def _finish(name, path, tags, got, clock, warnings):
    image_t = np.asarray(got.image_t, np.float64).reshape(-1, 2)
    col = 0 if clock == 'bag' else 1
    offset = float(np.median(image_t[:, 0] - image_t[:, 1])) if len(image_t) else 0.0
    shift = 0.0 if clock == 'bag' else offset

    def times(pairs):
        return pairs[:, col] + shift

    joints = {}
    for joint, samples in got.joints.items():
        arr = np.asarray(samples, np.float64)
        order = np.argsort(times(arr), kind='stable')
        joints[joint] = (times(arr)[order], arr[order, 2])
    wrist_t = np.asarray(got.wrist_t, np.float64).reshape(-1, 2)
    wrists = np.asarray(got.wrists, np.float64).reshape(-1, 18)
    order = np.argsort(times(wrist_t), kind='stable')
    img_order = np.argsort(times(image_t), kind='stable')
    cmd_t = np.asarray(got.command_t, np.float64)
    cmd_order = np.argsort(cmd_t, kind='stable')
    label_t = np.asarray(got.label_t, np.float64)
    label_order = np.argsort(label_t, kind='stable')
    image_stamps = image_t[:, 1][img_order]
    return RawEpisode(
        name=name, path=path, tags=tags,
        image_times=times(image_t)[img_order], images=[got.images[i] for i in img_order],
        joints=joints, command_times=cmd_t[cmd_order],
        commands=[got.commands[i] for i in cmd_order], image_stamps=image_stamps,
        label_stamps=label_t[label_order], label_names=got.label_names,
        labels=[got.labels[i] for i in label_order],
        instructions=sorted(got.instructions), wrist_times=times(wrist_t)[order],
        wrists=wrists[order], warnings=warnings)
