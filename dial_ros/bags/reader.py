"""Read rosbag2 MCAP directories: raw messages in log-time order and a summary; no rclpy."""
import pathlib
import re

import yaml
from mcap.reader import make_reader

from dial_ros.bags import metadata as meta

_SEGMENT = re.compile(r'_(\d+)\.mcap$')


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
