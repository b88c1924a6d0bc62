"""A rosbag2 (MCAP storage) writer of raw CDR messages, with segment rotation; no rclpy.

One bag = one directory ``<dir>/`` holding ``<name>_0.mcap``, ``<name>_1.mcap`` ... (``name``
is the directory's name), ``metadata.yaml`` and the ``episode.yaml`` sidecar (tags and topic
types, written at start, for ``recover``). Each segment is a complete MCAP file in the
rosbag2 layout (profile ``ros2``, ``ros2msg`` schemas, ``cdr`` channels carrying
``offered_qos_profiles`` and ``topic_type_hash``, a ``rosbag2`` metadata record), readable
by ``ros2 bag``, rosbags, the ``mcap`` tools and Foxglove.

Crash safety: messages go into an in-memory chunk that is written to the OS when it reaches
``chunk_kb`` or is ``chunk_s`` old (``tick()`` flushes an idle topic's chunk); segment files
bypass user-space buffers, so a finished chunk survives kill -9, and the open segment is
fsynced at most every ``fsync_s`` against power loss. Rotation finalises the segment,
fsyncs it and atomically rewrites metadata.yaml listing the finished segments: a crash
costs at most the unfinished chunk of the open segment (power loss: also what was not
fsynced yet), and ``recover`` salvages every finished chunk of it.

Disk full (or any write error) stops the recording with a :class:`RecordingError` naming the
path; finished segments and their metadata.yaml stay valid.
"""
import errno
import importlib.util
import logging
import os
import pathlib
import threading
import time

import yaml
from mcap.writer import CompressionType, Writer as McapWriter

from dial_ros.bags import metadata as meta
from dial_ros.bags.types import default_types, normalise_type

LOG = logging.getLogger(__name__)
LIBRARY = 'dial_ros.bags'
_NO_AUTO_CHUNK = 2 ** 62   # chunks are cut by this writer (size and age), never by mcap
_COMPRESSION = {'none': CompressionType.NONE, 'lz4': CompressionType.LZ4,
                'zstd': CompressionType.ZSTD}


class RecordingError(OSError):
    """Writing stopped (disk full or another I/O error); the message names the path."""


class SegmentFile:
    """What mcap's Writer writes into: unbuffered, every write goes to the OS at once."""

    def __init__(self, path):
        self.path = str(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.pos = 0

    def write(self, data):
        view = memoryview(data).cast('B')
        while view:
            written = os.write(self.fd, view)
            self.pos += written
            view = view[written:]
        return len(data)

    def tell(self):
        return self.pos

    def flush(self):
        pass

    def fsync(self):
        os.fsync(self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class BagWriter:
    """Write raw CDR messages into a rosbag2 MCAP directory (see the module docstring).

    ``write()`` is thread-safe. ``tags`` (episode tags) go to ``custom_data``.
    ``max_segment_mb`` / ``max_segment_s``: rotate when the open segment is that large / spans
    that much log time (0 = never). ``fsync``: fsync finished segments and metadata.yaml, and
    the open segment after a chunk at most every ``fsync_s`` (0 = only at rotation).
    ``opener(path)`` makes the segment stream (tests inject failing streams). ``types``: a
    :class:`~dial_ros.bags.types.MessageTypes`.
    """

    def __init__(self, bag_dir, tags=None, max_segment_mb=0.0, max_segment_s=0.0,
                 chunk_kb=1024, chunk_s=1.0, compression='none', types=None, fsync=True,
                 fsync_s=1.0, opener=SegmentFile):
        self.dir = pathlib.Path(bag_dir)
        if max_segment_mb < 0 or max_segment_s < 0:
            raise ValueError(f'max_segment_mb / max_segment_s must be >= 0, got '
                             f'{max_segment_mb} / {max_segment_s}')
        if chunk_kb <= 0 or chunk_s <= 0:
            raise ValueError(f'chunk_kb and chunk_s must be > 0, got {chunk_kb} / {chunk_s}')
        if compression not in _COMPRESSION:
            raise ValueError(f'compression: {compression!r} is not one of {list(_COMPRESSION)}')
        if compression == 'zstd' and importlib.util.find_spec('zstandard') is None:
            raise ValueError("compression 'zstd' needs the zstandard package; use 'lz4'")
        if self.dir.exists() and any(self.dir.iterdir()):
            raise ValueError(f'{self.dir}: exists and is not empty; choose a new bag folder')
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = self.dir.name
        self.tags = meta.check_tags(tags)
        self.max_bytes = int(max_segment_mb * 1e6)
        self.max_ns = int(max_segment_s * 1e9)
        self.chunk_bytes, self.chunk_s = int(chunk_kb * 1024), float(chunk_s)
        self.compression, self.fsync_enabled, self.opener = compression, fsync, opener
        self.fsync_s, self._synced = float(fsync_s), time.monotonic()
        self.types = types or default_types()
        self.topics = {}          # name -> TopicInfo
        self.files = []           # FileInfo per segment, the last one open
        self.flushed_count = 0    # messages in chunks already handed to the OS
        self.bytes_done = 0       # bytes of finished segments
        self.error = None
        self.closed = False
        self._lock = threading.RLock()
        self._pending = self._pending_bytes = 0
        self._pending_since = None
        self._finished, self._done_counts = 0, {}
        meta.write_sidecar(self.dir, self.tags, (), fsync)
        self._open_segment()

    # --- public ------------------------------------------------------------------------
    @property
    def message_count(self):
        return sum(f.count for f in self.files)

    @property
    def bytes_written(self):
        """Bytes handed to the OS so far (finished segments + the open one)."""
        stream = getattr(self, '_stream', None)
        return self.bytes_done + (stream.tell() if stream is not None else 0)

    def counts(self):
        """Messages per topic."""
        with self._lock:
            return {name: t.count for name, t in self.topics.items()}

    def add_topic(self, topic, msgtype, qos=(), msgdef=None, rihs01=None):
        """Register a topic (once); the definition is resolved when not given."""
        msgtype = normalise_type(msgtype)
        with self._lock:
            self._check_open()
            known = self.topics.get(topic)
            if known is not None:
                if known.msgtype != msgtype:
                    raise ValueError(f'{topic}: already recorded as {known.msgtype}, '
                                     f'cannot add it as {msgtype}')
                return
            if msgdef is None or not rihs01:
                msgdef, rihs01 = self.types.definition(msgtype)
            info = meta.TopicInfo(topic, msgtype, msgdef, rihs01, [dict(q) for q in qos])
            self.topics[topic] = info
            self._guard(self._register, info)
            meta.write_sidecar(self.dir, self.tags, self.topics.values(), False)

    def set_tags(self, **tags):
        """Add or change episode tags (custom_data)."""
        with self._lock:
            self.tags = meta.check_tags({**self.tags, **tags})

    def write(self, topic, data, log_ns, publish_ns=None):
        """Append one serialised message; RecordingError once writing has failed."""
        with self._lock:
            self._check_open()
            info = self.topics.get(topic)
            if info is None:
                raise ValueError(f'{topic}: not added (call add_topic first)')
            current = self.files[-1]
            if current.count and (
                    (self.max_bytes and self._segment_bytes() >= self.max_bytes)
                    or (self.max_ns and log_ns - current.start_ns >= self.max_ns)):
                self._guard(self._rotate)
                current = self.files[-1]
            self._guard(self._mcap.add_message, self._channels[topic], log_ns, data,
                        log_ns if publish_ns is None else publish_ns, info.count)
            info.count += 1
            current.add(log_ns)
            self._pending += 1
            self._pending_bytes += len(data) + 31
            now = time.monotonic()
            if self._pending_since is None:
                self._pending_since = now
            if (self._pending_bytes >= self.chunk_bytes
                    or now - self._pending_since >= self.chunk_s):
                self._guard(self._flush_chunk)

    def tick(self):
        """Hand a chunk older than ``chunk_s`` to the OS (call it from a timer)."""
        with self._lock:
            if self.closed or self.error or self._pending_since is None:
                return
            if time.monotonic() - self._pending_since >= self.chunk_s:
                self._guard(self._flush_chunk)

    def close(self, **tags):
        """Finalise the open segment and metadata.yaml; returns :meth:`summary`.

        After a write error, it rewrites only metadata.yaml (finished segments) if it can.
        """
        with self._lock:
            if self.closed:
                return self.summary()
            if tags:
                self.tags = meta.check_tags({**self.tags, **tags})
            self.closed = True
            if self.error is None:
                try:
                    self._finish_segment()
                except OSError as err:
                    self._fail(err)
            custom = {**self.tags, 'state': 'failed' if self.error else 'closed'}
            if self.error:
                custom['error'] = str(self.error)
            try:
                meta.write_sidecar(self.dir, self.tags, self.topics.values(), False)
                self._write_metadata(custom)
            except OSError as err:
                LOG.error('%s: cannot write metadata.yaml (%s); the last one written stays',
                          self.dir, err)
            return self.summary()

    def summary(self):
        """Counts, bytes, segments and tags of the bag."""
        with self._lock:
            return {'path': str(self.dir), 'messages': self.message_count,
                    'topics': self.counts(), 'segments': [f.path for f in self.files],
                    'bytes': self.bytes_written, 'tags': dict(self.tags),
                    'error': str(self.error) if self.error else None}

    # --- segments ------------------------------------------------------------------------
    def _open_segment(self):
        path = self.dir / f'{self.name}_{len(self.files)}.mcap'
        self._stream = self.opener(path)
        self._mcap = McapWriter(self._stream, chunk_size=_NO_AUTO_CHUNK,
                                compression=_COMPRESSION[self.compression])
        self.files.append(meta.FileInfo(path.name))
        self._guard(self._mcap.start, 'ros2', LIBRARY)
        self._schemas, self._channels = {}, {}
        for info in self.topics.values():
            self._guard(self._register, info)

    def _register(self, info):
        schema = self._schemas.get(info.msgtype)
        if schema is None:
            schema = self._schemas[info.msgtype] = self._mcap.register_schema(
                info.msgtype, 'ros2msg', info.msgdef.encode())
        qos_text = yaml.safe_dump(info.qos, sort_keys=False) if info.qos else ''
        self._channels[info.name] = self._mcap.register_channel(
            info.name, 'cdr', schema,
            {'offered_qos_profiles': qos_text, 'topic_type_hash': info.rihs01})

    def _segment_bytes(self):
        return self._stream.tell() + self._pending_bytes

    def _flush_chunk(self):
        self._mcap.flush()
        if self.fsync_enabled and self.fsync_s > 0 \
                and time.monotonic() - self._synced >= self.fsync_s:
            self._stream.fsync()             # power loss then costs at most ~fsync_s
            self._synced = time.monotonic()
        self.flushed_count += self._pending
        self._pending = self._pending_bytes = 0
        self._pending_since = None

    def _finish_segment(self):
        self._flush_chunk()
        current = self.files[-1]
        info = meta.build(self.topics.values(), [current], self.tags)
        self._mcap.add_metadata('rosbag2', {
            'serialized_metadata': yaml.safe_dump(info['rosbag2_bagfile_information'],
                                                  sort_keys=False),
            'ros_distro': meta.ROS_DISTRO})
        self._mcap.finish()
        if self.fsync_enabled:
            self._stream.fsync()
        self.bytes_done += self._stream.tell()
        self._stream.close()
        self._stream = None
        self._finished += 1
        self._done_counts = {name: t.count for name, t in self.topics.items()}

    def _rotate(self):
        self._finish_segment()
        self._write_metadata({**self.tags, 'state': 'recording'})
        self._open_segment()
        LOG.info('%s: segment %d', self.dir, len(self.files) - 1)

    def _write_metadata(self, custom):
        """metadata.yaml listing the finished segments (a valid bag at every moment)."""
        files = self.files[:self._finished]
        topics = [meta.TopicInfo(t.name, t.msgtype, t.msgdef, t.rihs01, t.qos,
                                 self._done_counts.get(t.name, 0))
                  for t in self.topics.values()]
        meta.write_yaml_atomic(self.dir / meta.METADATA, meta.build(topics, files, custom),
                               self.fsync_enabled)

    # --- errors --------------------------------------------------------------------------
    def _check_open(self):
        if self.error is not None:
            raise RecordingError(self.error.errno, f'{self.dir}: recording stopped after an '
                                 f'error: {self.error}')
        if self.closed:
            raise ValueError(f'{self.dir}: bag is closed')

    def _guard(self, func, *args):
        try:
            return func(*args)
        except OSError as err:
            self._fail(err)
            raise self.error from err

    def _fail(self, err):
        if self.error is not None:
            return
        stream = getattr(self, '_stream', None)
        where = getattr(stream, 'path', self.dir)
        if err.errno == errno.ENOSPC:
            text = (f'disk full writing {where}: recording stopped; the finished segments in '
                    f'{self.dir} are kept (free space, then `python -m dial_ros.bags recover '
                    f'{self.dir}` salvages the open one)')
        else:
            text = f'cannot write {where}: {err.strerror or err}; recording stopped'
        self.error = RecordingError(err.errno, text)
        LOG.error('%s', text)
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
            self._stream = None
