"""Rebuild a valid bag from segments cut off by kill -9 or power loss; no rclpy.

    python -m dial_ros.bags recover <bag_dir> [--delete-truncated]

Every ``*.mcap`` segment of the folder is checked. A finalised one (footer and summary
present) is kept as it is. A truncated one is read record by record with mcap's
StreamReader (chunk CRCs checked) up to the first incomplete or corrupt record; every
finished chunk is rewritten into a valid MCAP file under the segment's name, and the
original is kept as ``<segment>.truncated`` (or deleted). metadata.yaml is then regenerated
from the segments themselves (topics, types, QoS, counts, times) and the episode tags of
``episode.yaml`` (and of the last metadata.yaml), with ``outcome`` ``unknown`` unless known
and ``state: recovered``.
"""
import logging
import os
import pathlib

import yaml
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer as McapWriter

from dial_ros.bags import metadata as meta
from dial_ros.bags.reader import READ_ERRORS, finalised_summary, segment_files
from dial_ros.bags.writer import LIBRARY, SegmentFile

LOG = logging.getLogger(__name__)


def _salvage(path, tmp):
    """Copy every complete record of a truncated segment into ``tmp``; message count."""
    stream = SegmentFile(tmp)
    writer = McapWriter(stream, chunk_size=1 << 20, compression=CompressionType.NONE)
    writer.start('ros2', LIBRARY)
    schemas, channels, pending, count = {}, {}, {}, 0
    try:
        with open(path, 'rb') as f:
            for record in StreamReader(f, validate_crcs=True).records:
                if isinstance(record, Schema):
                    schemas[record.id] = writer.register_schema(record.name, record.encoding,
                                                                record.data)
                elif isinstance(record, Channel):
                    pending[record.id] = record
                elif isinstance(record, Message):
                    channel = channels.get(record.channel_id)
                    if channel is None:
                        old = pending[record.channel_id]
                        channel = channels[record.channel_id] = writer.register_channel(
                            old.topic, old.message_encoding, schemas.get(old.schema_id, 0),
                            dict(old.metadata))
                    writer.add_message(channel, record.log_time, record.data,
                                       record.publish_time, record.sequence)
                    count += 1
    except READ_ERRORS + (KeyError,) as err:
        LOG.info('%s: stopped at %s: %s', path.name, type(err).__name__, err)
    writer.finish()
    stream.fsync()
    stream.close()
    return count


def _scan(path, summary, topics):
    """Fill ``topics`` (name -> TopicInfo) from a finalised segment; its FileInfo."""
    stats = summary.statistics
    info = meta.FileInfo(path.name, stats.message_start_time, stats.message_end_time,
                         stats.message_count)
    for channel in summary.channels.values():
        schema = summary.schemas.get(channel.schema_id)
        topic = topics.get(channel.topic)
        if topic is None:
            qos = yaml.safe_load(channel.metadata.get('offered_qos_profiles') or '[]') or []
            topic = topics[channel.topic] = meta.TopicInfo(
                channel.topic, schema.name if schema else '',
                schema.data.decode() if schema else '',
                channel.metadata.get('topic_type_hash', ''), qos if isinstance(qos, list)
                else [])
        topic.count += stats.channel_message_counts.get(channel.id, 0)
    return info


def recover(bag_dir, delete_truncated=False):
    """Recover ``bag_dir`` in place; returns a summary dict (ValueError when hopeless)."""
    bag_dir = pathlib.Path(bag_dir)
    paths = segment_files(bag_dir)
    if not paths:
        raise ValueError(f'{bag_dir}: no .mcap segments to recover')
    topics, files, salvaged, dropped = {}, [], 0, []
    for path in paths:
        summary = finalised_summary(path)
        if summary is None:
            tmp = path.with_name(path.name + '.recovering')
            if tmp.exists():
                tmp.unlink()
            count = _salvage(path, tmp)
            kept = path.with_name(path.name + '.truncated')
            os.replace(path, kept)
            if delete_truncated:
                kept.unlink()
            if count == 0:
                tmp.unlink()
                dropped.append(path.name)
                LOG.warning('%s: no finished chunk; segment dropped', path.name)
                continue
            os.replace(tmp, path)
            salvaged += count
            LOG.info('%s: %d messages salvaged', path.name, count)
            summary = finalised_summary(path)
            if summary is None:
                raise ValueError(f'{path}: rewritten segment does not read back')
        files.append(_scan(path, summary, topics))
    tags, state = _tags(bag_dir)
    custom = dict(tags)
    if salvaged or dropped or state != 'closed':
        custom.update(state='recovered', recovered=f'{salvaged} messages salvaged from '
                      f'truncated segments; {len(dropped)} empty segment(s) dropped')
    else:
        custom['state'] = state
    meta.write_yaml_atomic(bag_dir / meta.METADATA,
                           meta.build(list(topics.values()), files, custom))
    return {'path': str(bag_dir), 'messages': sum(f.count for f in files),
            'salvaged': salvaged, 'segments': [f.path for f in files], 'dropped': dropped,
            'topics': {t.name: t.count for t in topics.values()}, 'tags': tags}


def _tags(bag_dir):
    """(tags, last state): the sidecar's tags, overridden by the last metadata.yaml's."""
    tags = dict((meta.read_sidecar(bag_dir).get('tags') or {}))
    try:
        tags.update(meta.read_metadata(bag_dir).get('custom_data') or {})
    except ValueError:
        pass
    state = tags.pop('state', '')
    for key in ('recovered', 'error'):
        tags.pop(key, None)
    if not tags.get('outcome'):
        tags['outcome'] = 'unknown'
    return {str(k): str(v) for k, v in tags.items()}, state
