"""Read rosbag2 MCAP directories: raw messages in log-time order and a summary; no rclpy.

``read_messages`` reads a closed bag as metadata.yaml describes it. ``scan_messages`` reads
what can be read of any bag folder: one never closed (no metadata.yaml), one with a
truncated segment (scanned forward up to the damage), or a sqlite3 (.db3) one.
"""
import logging
import pathlib
import re
import struct

import yaml
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader

from dial_ros.bags import metadata as meta

LOG = logging.getLogger(__name__)
_SEGMENT = re.compile(r'_(\d+)\.mcap$')
READ_ERRORS = (McapError, EOFError, struct.error, ValueError, OSError)


def segment_files(bag_dir):
    """Segment paths in recording order (``<name>_<i>.mcap`` sorted by i; others by name)."""
    bag_dir = pathlib.Path(bag_dir)
    if not bag_dir.is_dir():
        raise ValueError(f'{bag_dir}: not a bag folder')

    def key(path):
        match = _SEGMENT.search(path.name)
        return (0, int(match.group(1)), path.name) if match else (1, 0, path.name)
    return sorted(bag_dir.glob('*.mcap'), key=key)


def listed_files(bag_dir):
    """The segment files named by metadata.yaml (ValueError when missing)."""
    info = meta.read_metadata(bag_dir)
    return [pathlib.Path(bag_dir) / p for p in info.get('relative_file_paths') or []]


def read_messages(bag_dir, topics=None, start_ns=None):
    """Yield ``(topic, msgtype, log_ns, data)`` over the bag's segments in log-time order."""
    wanted = set(topics) if topics else None
    for path in listed_files(bag_dir):
        with open(path, 'rb') as f:
            reader = make_reader(f)
            for schema, channel, message in reader.iter_messages(
                    topics=list(wanted) if wanted else None, start_time=start_ns,
                    log_time_order=True):
                yield (channel.topic, schema.name if schema else '', message.log_time,
                       message.data)


def finalised_summary(path):
    """The summary of a finalised MCAP file, or None when it is truncated or unreadable."""
    try:
        with open(path, 'rb') as f:
            summary = make_reader(f).get_summary()
    except READ_ERRORS + (KeyError, IndexError):
        return None
    if summary is None or summary.statistics is None:
        return None
    return summary


def scan_messages(bag_dir, topics=None, warnings=None):
    """Yield ``(topic, msgtype, log_ns, data)`` of what can be read of a bag folder.

    Files in the order metadata.yaml lists them (else the segments in recording order, e.g.
    of a recording that was never closed), log-time order within a finalised MCAP file. A
    truncated MCAP file is read forward up to its first incomplete record; .db3 files are
    read with ``rosbags``. Each such case appends a line to ``warnings``; ValueError when
    nothing at all can be read.
    """
    bag_dir = pathlib.Path(bag_dir)
    warnings = [] if warnings is None else warnings
    wanted = set(topics) if topics else None
    read_any, errors = False, []
    for path in _storage_files(bag_dir, warnings):
        if path.suffix == '.db3':
            source = _db3_messages(path, wanted)
        elif finalised_summary(path) is not None:
            source = _indexed_messages(path, wanted)
        else:
            source = _salvaged_messages(path, wanted, warnings, errors)
        for item in source:
            read_any = True
            yield item
    if errors and not read_any:
        raise ValueError(errors[0])


def _storage_files(bag_dir, warnings):
    if not bag_dir.is_dir():
        raise ValueError(f'{bag_dir}: not a bag folder')
    try:
        listed = listed_files(bag_dir)
        missing = [p.name for p in listed if not p.is_file()]
        if listed and not missing:
            return listed
        if missing:
            warnings.append(f'metadata.yaml lists missing files {missing}; reading the '
                            'storage files present')
    except ValueError as err:
        warnings.append(f'{err}: reading the storage files directly, without episode tags')
    files = segment_files(bag_dir) or sorted(bag_dir.glob('*.db3'))
    if not files:
        raise ValueError(f'{bag_dir}: no readable metadata.yaml and no .mcap/.db3 files')
    return files


def _indexed_messages(path, wanted):
    with open(path, 'rb') as f:
        for schema, channel, message in make_reader(f).iter_messages(
                topics=list(wanted) if wanted else None, log_time_order=True):
            yield (channel.topic, schema.name if schema else '', message.log_time,
                   message.data)


def _salvaged_messages(path, wanted, warnings, errors):
    """Forward scan of a damaged MCAP file: every message before the damage."""
    schemas, channels, count, why = {}, {}, 0, 'no footer'
    try:
        with open(path, 'rb') as f:
            for record in StreamReader(f, validate_crcs=True).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel):
                    channels[record.id] = (record.topic, schemas.get(record.schema_id, ''))
                elif isinstance(record, Message) and record.channel_id in channels:
                    topic, msgtype = channels[record.channel_id]
                    if wanted is None or topic in wanted:
                        count += 1
                        yield topic, msgtype, record.log_time, record.data
    except READ_ERRORS + (KeyError,) as err:
        why = f'{type(err).__name__}: {err}'
    LOG.debug('%s: forward scan stopped (%s) after %d messages', path.name, why, count)
    errors.append(f'{path.name}: not a readable MCAP file ({why})')
    warnings.append(f'{path.name} is damaged ({why}); salvaged {count} messages before the '
                    'damage')


def _db3_messages(path, wanted):
    """A sqlite3 storage file, through rosbags (rosbag2's former default storage)."""
    from rosbags.rosbag2 import Reader
    with Reader(path) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for conn, log_ns, data in reader.messages(connections=connections):
            yield conn.topic, conn.msgtype, log_ns, data


def info(bag_dir):
    """Summary of a bag from its metadata.yaml: topics, types, counts, duration, tags, size."""
    bag_dir = pathlib.Path(bag_dir)
    data = meta.read_metadata(bag_dir)
    topics = []
    for entry in data.get('topics_with_message_count') or []:
        topic = entry['topic_metadata']
        qos = topic.get('offered_qos_profiles') or []
        if isinstance(qos, str):
            qos = yaml.safe_load(qos) or []
        topics.append({'name': topic['name'], 'type': topic['type'],
                       'count': int(entry['message_count']), 'qos': qos})
    size = sum(p.stat().st_size for p in bag_dir.glob('*.mcap') if p.is_file())
    start = data['starting_time']['nanoseconds_since_epoch']
    return {'path': str(bag_dir), 'version': data.get('version'),
            'storage': data.get('storage_identifier'), 'start_ns': start,
            'duration_s': data['duration']['nanoseconds'] * 1e-9,
            'messages': int(data['message_count']), 'files': data.get('files') or [],
            'topics': topics, 'tags': dict(data.get('custom_data') or {}), 'bytes': size}


def format_info(summary):
    """Human-readable ``info`` text (like ``ros2 bag info``)."""
    lines = [f'Bag:        {summary["path"]}',
             f'Storage:    {summary["storage"]} (rosbag2 v{summary["version"]}), '
             f'{len(summary["files"])} file(s), {summary["bytes"] / 1e6:.1f} MB',
             f'Duration:   {summary["duration_s"]:.3f} s',
             f'Messages:   {summary["messages"]}']
    if summary['tags']:
        lines.append('Episode:    ' + ', '.join(f'{k}={v!r}' for k, v in
                                                sorted(summary['tags'].items())))
    lines.append('Topics:')
    width = max((len(t['name']) for t in summary['topics']), default=0)
    for topic in summary['topics']:
        rel = topic['qos'][0].get('reliability', '?') if topic['qos'] else '?'
        lines.append(f'  {topic["name"]:<{width}}  {topic["type"]:<34} {topic["count"]:>8}  '
                     f'{rel}')
    for entry in summary['files']:
        lines.append(f'  file {entry["path"]}: {entry["message_count"]} messages, '
                     f'{entry["duration"]["nanoseconds"] * 1e-9:.3f} s')
    return '\n'.join(lines)
