"""Read one recorded episode (a rosbag2 directory) into arrays, with ``rosbags`` (no rclpy).

Messages are read with ``rosbags.rosbag2.Reader`` and deserialised with our own typestore
(ROS 2 Kilted + ``msg/*.msg``), not with ``AnyReader``: AnyReader parses the embedded
definition of every topic in the bag, and rosbags 0.11.9 rejects an empty string constant
(``string OUTCOME_UNKNOWN=`` in EpisodeEvent.msg), which would make a whole bag unreadable
because of one topic we do not even use.

One bag directory is one episode. Its tags come from ``custom_data`` in ``metadata.yaml``
(task, instruction, source, operator, outcome, robot, embodiment). A directory without
``metadata.yaml`` (a recording that was never closed) is read from its ``.mcap`` / ``.db3``
files directly, with a warning; a storage file that ends early (truncated) keeps the
messages read before the damage, with a warning. Errors are ``EpisodeError`` naming the
episode.
"""
import dataclasses
import functools
import glob
import io
import logging
import pathlib
import re

import numpy as np
import yaml

LOG = logging.getLogger(__name__)
MSG_DIRS = (pathlib.Path(__file__).resolve().parents[2] / 'msg',)
OUTCOME_ALIASES = {'failure': 'fail', 'failed': 'fail', 'succeeded': 'success'}
_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}


class EpisodeError(ValueError):
    """An episode that cannot be converted; the message starts with the episode's name."""


@dataclasses.dataclass
class Topics:
    """Topic names read from a recording (others are ignored)."""

    image: str = '/camera/head/image_raw'
    joint_states: str = '/joint_states'
    commands: str = '/dial/joint_commands'
    # the teacher's clean targets when the executed commands carry DART noise (expert node):
    # sensor_msgs/JointState stamped with the joint state (= camera frame) they answer
    labels: str = '/expert/action_label'
    instruction: str = '/dial/instruction'
    wrists: str = '/human/wrist_poses'


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


def _msg_types(path):
    from rosbags.typesys import get_types_from_msg
    text, name = path.read_text(), f'dial_ros/msg/{path.stem}'
    try:
        return get_types_from_msg(text, name)
    except Exception:  # rosbags rejects empty string constants (``string X=``)
        LOG.debug('%s: dropping empty string constants rosbags cannot parse', path.name)
        return get_types_from_msg(re.sub(r'(?m)^\s*string\s+\w+\s*=\s*$', '', text), name)


@functools.lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Kilted typestore plus the project's messages from ``msg/*.msg``."""
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for folder in MSG_DIRS:
        for path in sorted(folder.glob('*.msg')):
            types.update(_msg_types(path))
    if types:
        store.register(types)
    else:
        LOG.debug('no msg/*.msg found; custom dial_ros types are not registered')
    return store


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
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def image_to_rgb(msg, msgtype):
    """uint8 (H, W, 3) RGB from an Image (rgb8/bgr8/rgba8/bgra8/mono8) or CompressedImage."""
    if msgtype.endswith('CompressedImage'):
        from PIL import Image
        return np.asarray(Image.open(io.BytesIO(bytes(msg.data))).convert('RGB'))
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise ValueError(f'image.encoding: {msg.encoding!r} is not one of {sorted(_CHANNELS)}')
    c, h, w = _CHANNELS[enc], msg.height, msg.width
    data = np.frombuffer(msg.data, np.uint8)
    if msg.step < w * c or data.size < h * msg.step:
        raise ValueError(f'image.data: {data.size} bytes for {w}x{h} {enc} step {msg.step}')
    img = data[:h * msg.step].reshape(h, msg.step)[:, :w * c].reshape(h, w, c)
    if c == 1:
        return np.repeat(img, 3, axis=2)
    img = img[..., :3]
    return img[..., ::-1].copy() if enc.startswith('bgr') else img.copy()


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


def _rosbags_messages(source, topics):
    """(topic, msgtype, t_ns, raw) of the wanted topics via rosbags (a dir or one file)."""
    from rosbags.rosbag2 import Reader
    with Reader(source) as reader:
        wanted = [c for c in reader.connections if c.topic in topics]
        for conn, t_ns, raw in reader.messages(connections=wanted):
            yield conn.topic, conn.msgtype, t_ns, raw


def _scan_mcap(path, topics):
    """Forward scan of a damaged MCAP file (no footer/summary): messages up to the damage."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    schemas, channels = {}, {}
    with open(path, 'rb') as f:
        for record in StreamReader(f, record_size_limit=2 ** 30).records:
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = (record.topic, schemas.get(record.schema_id, ''))
            elif isinstance(record, Message) and record.channel_id in channels:
                topic, msgtype = channels[record.channel_id]
                if topic in topics:
                    yield topic, msgtype, record.log_time, record.data


def _messages(path, name, topics, warnings):
    """Messages of a bag directory, file by file when it does not open as a whole.

    A damaged MCAP file (truncated: no footer) is scanned forward up to the damage.
    """
    if (path / 'metadata.yaml').is_file():
        try:
            yield from _rosbags_messages(path, topics)
            return
        except Exception as err:
            if not any(path.glob('*.mcap')):
                raise
            warnings.append(f'bag does not open as a whole ({type(err).__name__}: {err}); '
                            'reading its files one by one')
    else:
        warnings.append('no metadata.yaml (recording not closed?): reading the storage files '
                        'directly, without episode tags')
    files = sorted(path.glob('*.mcap')) or sorted(path.glob('*.db3'))
    if not files:
        raise EpisodeError(f'{name}: no metadata.yaml and no .mcap/.db3 files in {path}')
    for file in files:
        count = 0
        try:
            for item in _rosbags_messages(file, topics):
                count += 1
                yield item
        except Exception as err:
            if count or file.suffix != '.mcap':
                raise
            LOG.debug('%s: %s: %s; scanning forward', name, file.name, err)
            try:
                for item in _scan_mcap(file, topics):
                    count += 1
                    yield item
            except Exception as scan_err:
                if not count:
                    raise scan_err from err
            warnings.append(f'{file.name} is damaged ({err}); salvaged {count} messages '
                            'before the damage')


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
    store = typestore()
    count = 0
    try:
        for topic, msgtype, t_ns, raw in _messages(path, name, dataclasses.astuple(topics),
                                                   warnings):
            count += 1
            try:
                msg = store.deserialize_cdr(raw, msgtype)
            except Exception as err:  # unknown type or a corrupt message: count it
                got.bad.setdefault(topic, [0, f'{type(err).__name__}: {err}'])[0] += 1
                continue
            got(topic, msgtype, t_ns * 1e-9, msg)
    except EpisodeError:
        raise
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
