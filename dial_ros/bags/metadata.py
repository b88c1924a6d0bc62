"""rosbag2 metadata.yaml, QoS profiles as plain dicts, episode tags and the episode sidecar.

No rclpy: QoS profiles travel as the dicts rosbag2 writes in metadata version 9
(``history``, ``depth``, ``reliability``, ``durability``, ``deadline``, ``lifespan``,
``liveliness``, ``liveliness_lease_duration``, ``avoid_ros_namespace_conventions``).
"""
import dataclasses
import logging
import os
import pathlib

import yaml

LOG = logging.getLogger(__name__)
METADATA = 'metadata.yaml'
SIDECAR = 'episode.yaml'
VERSION = 9
ROS_DISTRO = 'kilted'

TAG_KEYS = ('task', 'instruction', 'source', 'operator', 'outcome', 'robot', 'embodiment')
SOURCES = ('teleop', 'human', 'policy', 'intervention', 'expert', 'replay', '')
OUTCOMES = ('success', 'fail', 'discard', 'unknown', '')
# spellings accepted from events and the scripted expert -> the tag value
OUTCOME_ALIASES = {'failure': 'fail', 'failed': 'fail', 'timeout': 'fail', 'aborted': 'fail',
                   'succeeded': 'success', 'discarded': 'discard'}
_TIME_ZERO = {'sec': 0, 'nsec': 0}


def qos_dict(reliability='reliable', durability='volatile', depth=10, history='keep_last',
             liveliness='automatic'):
    """A v9 QoS profile dict; infinite deadline/lifespan/lease are written as 0 (default)."""
    return {'history': history, 'depth': int(depth), 'reliability': reliability,
            'durability': durability, 'deadline': dict(_TIME_ZERO),
            'lifespan': dict(_TIME_ZERO), 'liveliness': liveliness,
            'liveliness_lease_duration': dict(_TIME_ZERO),
            'avoid_ros_namespace_conventions': False}


def normalise_outcome(value):
    """Map an outcome spelling to a tag value; ValueError for unknown ones."""
    value = (value or '').strip().lower()
    value = OUTCOME_ALIASES.get(value, value)
    if value not in OUTCOMES:
        raise ValueError(f'outcome: {value!r} is not one of {list(OUTCOMES[:4])}')
    return value


def check_tags(tags):
    """Return tags as a str -> str dict; ValueError for a bad source or outcome."""
    out = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f'episode tag names must be non-empty strings, got {key!r}')
        out[key] = '' if value is None else str(value)
    if out.get('source', '') not in SOURCES:
        raise ValueError(f'source: {out["source"]!r} is not one of {list(SOURCES[:-1])}')
    if 'outcome' in out:
        out['outcome'] = normalise_outcome(out['outcome'])
    return out


@dataclasses.dataclass
class TopicInfo:
    """One recorded topic: its type, definition, hash, offered QoS and message count."""

    name: str
    msgtype: str
    msgdef: str = ''
    rihs01: str = ''
    qos: list = dataclasses.field(default_factory=list)
    count: int = 0


@dataclasses.dataclass
class FileInfo:
    """One segment file: relative path, first/last log time (ns) and message count."""

    path: str
    start_ns: int = 0
    end_ns: int = 0
    count: int = 0

    def add(self, log_ns):
        if self.count == 0 or log_ns < self.start_ns:
            self.start_ns = log_ns
        self.end_ns = max(self.end_ns, log_ns)
        self.count += 1


def build(topics, files, custom_data=None):
    """The ``rosbag2_bagfile_information`` dict of a bag (version 9, MCAP storage)."""
    used = [f for f in files if f.count]
    start = min((f.start_ns for f in used), default=0)
    end = max((f.end_ns for f in used), default=0)
    return {'rosbag2_bagfile_information': {
        'version': VERSION,
        'storage_identifier': 'mcap',
        'duration': {'nanoseconds': max(0, end - start)},
        'starting_time': {'nanoseconds_since_epoch': start},
        'message_count': sum(f.count for f in files),
        'topics_with_message_count': [
            {'topic_metadata': {'name': t.name, 'type': t.msgtype,
                                'serialization_format': 'cdr',
                                'offered_qos_profiles': list(t.qos),
                                'type_description_hash': t.rihs01},
             'message_count': t.count} for t in topics],
        'compression_format': '',
        'compression_mode': '',
        'relative_file_paths': [f.path for f in files],
        'files': [{'path': f.path,
                   'starting_time': {'nanoseconds_since_epoch': f.start_ns},
                   'duration': {'nanoseconds': max(0, f.end_ns - f.start_ns)},
                   'message_count': f.count} for f in files],
        'custom_data': {str(k): str(v) for k, v in (custom_data or {}).items()} or None,
        'ros_distro': ROS_DISTRO,
    }}


def write_yaml_atomic(path, data, fsync=True):
    """Write YAML to ``path`` via a temporary file and rename (readers never see half)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + '.tmp')
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_metadata(bag_dir):
    """Return the ``rosbag2_bagfile_information`` dict; ValueError when missing or bad."""
    path = pathlib.Path(bag_dir) / METADATA
    if not path.is_file():
        raise ValueError(f'{path}: no metadata.yaml (an interrupted recording? run '
                         f'`python -m dial_ros.bags recover {bag_dir}`)')
    try:
        data = yaml.safe_load(path.read_text())
        return data['rosbag2_bagfile_information']
    except (yaml.YAMLError, TypeError, KeyError) as err:
        raise ValueError(f'{path}: not a rosbag2 metadata file: {err}') from None


def write_sidecar(bag_dir, tags, topics=(), fsync=True):
    """Write ``episode.yaml`` (tags and topic types, for recovery) next to the segments."""
    data = {'tags': dict(tags), 'topics': [{'name': t.name, 'type': t.msgtype}
                                           for t in topics]}
    write_yaml_atomic(pathlib.Path(bag_dir) / SIDECAR, data, fsync)


def read_sidecar(bag_dir):
    """Return the sidecar dict ({} when absent or unreadable, with a warning)."""
    path = pathlib.Path(bag_dir) / SIDECAR
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return data if isinstance(data, dict) else {}
    except yaml.YAMLError as err:
        LOG.warning('%s: unreadable (%s); episode tags lost', path, err)
        return {}
