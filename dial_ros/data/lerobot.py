"""Write a dataset in the LeRobot v3.0 layout (parquet + mp4 + meta).

    meta/info.json                      codebase_version v3.0, fps, features, path templates
    meta/stats.json                     mean/std/min/max/count per numeric feature
    meta/tasks.parquet                  task_index, task (the instruction text)
    meta/episodes/chunk-000/file-000.parquet   one row per episode (+ our tags)
    data/chunk-000/file-000.parquet     one row per frame, several episodes per file
    videos/observation.images.head/chunk-000/file-000.mp4   several episodes per file

An episode never spans two files. A new data/video file starts once the current one passes
``data_files_size_in_mb`` / ``video_files_size_in_mb`` (video size as flushed to disk so far:
the encoder's lookahead holds back the last ~20 frames); ``chunks_size`` files per chunk.
Video frame k of an episode is at ``from_timestamp + k / fps`` in its file.
Stats of ``observation.state``, ``action`` and ``observation.eef`` count only the frames
whose ``has_state`` / ``has_action`` / ``has_eef`` flag is true (a human episode has no
joint actions); image stats are per channel in [0, 1] over up to 10 frames per episode.
"""
import json
import logging
import pathlib

import numpy as np

from dial_ros.data.video import CODEC_NAMES, PIX_FMTS, VideoWriter

LOG = logging.getLogger(__name__)
IMAGE_KEY = 'observation.images.head'
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
EPISODES_PATH = 'meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
EEF_NAMES = [f'{side}_wrist_{c}' for side in ('right', 'left')
             for c in ('x', 'y', 'z', 'r6d_0', 'r6d_1', 'r6d_2', 'r6d_3', 'r6d_4', 'r6d_5')]
TAGS = ('source', 'outcome', 'operator', 'robot', 'embodiment', 'task')
TAG_COLUMNS = {'task': 'task_name'}   # LeRobot's own 'tasks' column holds the instruction
VECTORS = {'observation.state': 'has_state', 'action': 'has_action',
           'observation.eef': 'has_eef'}
SCALARS = {'timestamp': 'float32', 'frame_index': 'int64', 'episode_index': 'int64',
           'index': 'int64', 'task_index': 'int64'}
FLAGS = ('has_state', 'has_action', 'has_eef')
# pandas reads tasks.parquet with the task text as the index, as LeRobot's loader expects
PANDAS_TASKS = {b'pandas': json.dumps({
    'index_columns': ['task'], 'column_indexes': [],
    'columns': [{'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
                 'numpy_type': 'int64', 'metadata': None},
                {'name': 'task', 'field_name': 'task', 'pandas_type': 'unicode',
                 'numpy_type': 'object', 'metadata': None}],
    'creator': {'library': 'pyarrow'}, 'pandas_version': '2.2.3'}).encode()}


class RunningStats:
    """mean/std/min/max/count of (n, d) rows, optionally masked per row."""

    def __init__(self):
        self.count, self.sum, self.sumsq, self.min, self.max = 0, 0.0, 0.0, None, None

    def add(self, values, mask=None):
        values = np.asarray(values, np.float64).reshape(len(values), -1)
        if mask is not None:
            values = values[np.asarray(mask, bool)]
        if not len(values):
            return
        self.count += len(values)
        self.sum = self.sum + values.sum(0)
        self.sumsq = self.sumsq + (values ** 2).sum(0)
        lo, hi = values.min(0), values.max(0)
        self.min = lo if self.min is None else np.minimum(self.min, lo)
        self.max = hi if self.max is None else np.maximum(self.max, hi)

    def result(self, dim, shape=None):
        if not self.count:
            zeros = np.zeros(dim)
            out = {'mean': zeros, 'std': np.ones(dim), 'min': zeros, 'max': zeros}
        else:
            mean = self.sum / self.count
            std = np.sqrt(np.maximum(self.sumsq / self.count - mean ** 2, 0.0))
            out = {'mean': mean, 'std': std, 'min': self.min, 'max': self.max}
        out = {k: v.reshape(shape or (dim,)).tolist() for k, v in out.items()}
        out['count'] = [int(self.count)]
        return out


def _fixed_list(array):
    import pyarrow as pa
    array = np.ascontiguousarray(array, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])


def _next_file(chunk, file, chunks_size):
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


class LeRobotWriter:
    """Appends aligned episodes; ``close()`` writes the meta files and returns info."""

    def __init__(self, root, spec, fps, image_size, vcodec, chunks_size=1000,
                 data_files_size_in_mb=100, video_files_size_in_mb=500, extra_info=None):
        self.root = pathlib.Path(root)
        self.spec, self.fps, self.image_size, self.vcodec = spec, fps, image_size, vcodec
        self.chunks_size = chunks_size
        self.data_mb, self.video_mb = data_files_size_in_mb, video_files_size_in_mb
        self.extra_info = extra_info or {}
        self.tasks, self.episodes, self.total_frames = {}, [], 0
        self.stats = {k: RunningStats() for k in [*VECTORS, *SCALARS, IMAGE_KEY]}
        self._rows, self._row_bytes = [], 0
        self._data_loc, self._video_loc = (0, 0), (0, 0)
        self._video = None
        self._image_frames = 0

    def _path(self, template, loc, **kw):
        path = self.root / template.format(chunk_index=loc[0], file_index=loc[1], **kw)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_episode(self, frames, images, instruction, tags):
        """Append one episode (``align.Frames`` + its uint8 (S, S, 3) images); its index."""
        n, size = len(frames), self.image_size
        if len(images) != n or any(im.shape != (size, size, 3) for im in images):
            raise ValueError(f'images: expected {n} frames of {size}x{size}x3')
        index = len(self.episodes)
        task_index = self.tasks.setdefault(instruction, len(self.tasks))
        if self._video and self._video.size() > self.video_mb * 2 ** 20:
            self._video.close()
            self._video = None
            self._video_loc = _next_file(*self._video_loc, self.chunks_size)
        if self._video is None:
            path = self._path(VIDEO_PATH, self._video_loc, video_key=IMAGE_KEY)
            self._video = VideoWriter(path, self.fps, size, size, self.vcodec)
        from_ts = self._video.count / self.fps
        self._video.write(images)
        if self._row_bytes > self.data_mb * 2 ** 20:
            self._flush_data()
            self._data_loc = _next_file(*self._data_loc, self.chunks_size)
        start = self.total_frames
        columns = {
            'observation.state': frames.state, 'action': frames.action,
            'observation.eef': frames.eef, 'has_state': frames.has_state,
            'has_action': frames.has_action, 'has_eef': frames.has_eef,
            'timestamp': (np.arange(n) / self.fps).astype(np.float32),
            'frame_index': np.arange(n), 'episode_index': np.full(n, index),
            'index': np.arange(start, start + n), 'task_index': np.full(n, task_index)}
        self._rows.append(columns)
        self._row_bytes += n * 4 * (2 * self.spec.num_joints + 18 + 12)
        for key, flag in VECTORS.items():
            self.stats[key].add(columns[key], columns[flag])
        for key in SCALARS:
            self.stats[key].add(columns[key])
        sample = np.stack([images[i] for i in np.linspace(0, n - 1, min(n, 10)).astype(int)])
        self.stats[IMAGE_KEY].add(sample.reshape(-1, 3) / 255.0)
        self._image_frames += len(sample)
        self.total_frames += n
        row = {'episode_index': index, 'tasks': [instruction], 'length': n,
               'data/chunk_index': self._data_loc[0], 'data/file_index': self._data_loc[1],
               'dataset_from_index': start, 'dataset_to_index': start + n}
        prefix = f'videos/{IMAGE_KEY}/'
        row.update({prefix + 'chunk_index': self._video_loc[0],
                    prefix + 'file_index': self._video_loc[1],
                    prefix + 'from_timestamp': from_ts,
                    prefix + 'to_timestamp': self._video.count / self.fps,
                    'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0})
        row.update({TAG_COLUMNS.get(key, key): str(tags.get(key, '')) for key in TAGS})
        row['source'] = frames.source
        row['weight'] = float(tags.get('weight', 1.0))   # sampling weight in training
        row['has_action'] = bool(frames.has_action.any())
        self.episodes.append(row)
        return index

    def _flush_data(self):
        import pyarrow as pa
        import pyarrow.parquet as pq
        if not self._rows:
            return
        merged = {k: np.concatenate([r[k] for r in self._rows]) for k in self._rows[0]}
        arrays = {k: (_fixed_list(v) if k in VECTORS else pa.array(v)) for k, v in merged.items()}
        pq.write_table(pa.table(arrays), self._path(DATA_PATH, self._data_loc))
        self._rows, self._row_bytes = [], 0

    def close(self):
        """Finish the files and write meta/; returns the info dict."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        self._flush_data()
        if self._video:
            self._video.close()
            self._video = None
        meta = self.root / 'meta'
        meta.mkdir(parents=True, exist_ok=True)
        tasks = sorted(self.tasks.items(), key=lambda kv: kv[1])
        table = pa.table({'task_index': pa.array([i for _, i in tasks], pa.int64()),
                          'task': pa.array([t for t, _ in tasks], pa.string())})
        pq.write_table(table.replace_schema_metadata(PANDAS_TASKS), meta / 'tasks.parquet')
        if self.episodes:
            columns = {k: [e[k] for e in self.episodes] for k in self.episodes[0]}
            pq.write_table(pa.table(columns), self._path(EPISODES_PATH, (0, 0)))
        info = self._info()
        (meta / 'stats.json').write_text(json.dumps(self._stats(), indent=1))
        (meta / 'info.json').write_text(json.dumps(info, indent=2))
        return info

    def _stats(self):
        dims = {'observation.state': self.spec.num_joints, 'action': self.spec.num_joints,
                'observation.eef': 18}
        out = {k: self.stats[k].result(dims.get(k, 1)) for k in [*VECTORS, *SCALARS]}
        out[IMAGE_KEY] = self.stats[IMAGE_KEY].result(3, (3, 1, 1))
        out[IMAGE_KEY]['count'] = [self._image_frames]  # frames sampled, as LeRobot counts
        return out

    def _info(self):
        size, joints = self.image_size, list(self.spec.joint_names)
        video_info = {'video.height': size, 'video.width': size,
                      'video.codec': CODEC_NAMES.get(self.vcodec, self.vcodec),
                      'video.pix_fmt': PIX_FMTS.get(self.vcodec, 'yuv420p'),
                      'video.is_depth_map': False,
                      'video.fps': self.fps, 'video.channels': 3, 'has_audio': False}
        features = {
            IMAGE_KEY: {'dtype': 'video', 'shape': [size, size, 3],
                        'names': ['height', 'width', 'channels'], 'info': video_info},
            'observation.state': {'dtype': 'float32', 'shape': [len(joints)], 'names': joints},
            'observation.eef': {'dtype': 'float32', 'shape': [18], 'names': EEF_NAMES},
            'action': {'dtype': 'float32', 'shape': [len(joints)], 'names': joints}}
        features.update({k: {'dtype': 'bool', 'shape': [1], 'names': None} for k in FLAGS})
        features.update({k: {'dtype': t, 'shape': [1], 'names': None}
                         for k, t in SCALARS.items()})
        return {
            'codebase_version': 'v3.0', 'robot_type': self.spec.name,
            'total_episodes': len(self.episodes), 'total_frames': self.total_frames,
            'total_tasks': len(self.tasks), 'chunks_size': self.chunks_size,
            'data_files_size_in_mb': self.data_mb, 'video_files_size_in_mb': self.video_mb,
            'fps': self.fps, 'splits': {'train': f'0:{len(self.episodes)}'},
            'data_path': DATA_PATH, 'video_path': VIDEO_PATH, 'features': features,
            'dial': self.extra_info}
