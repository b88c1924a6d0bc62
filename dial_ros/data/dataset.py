"""A LeRobot v3.0 dataset (as written by ``dial_ros.data.convert``) as DIAL training samples.

One sample per frame t of every episode:
- ``image``: frame t, uint8 (S, S, 3); ``future_image``: frame min(t + future_offset, T-1)
  (or ``obs_tokens`` / ``future_tokens`` of those frames after ``use_tokens``).
- ``state`` / ``state_mask`` (max_state_dim,): ``EmbodimentSpec.encode_state`` of the joint
  positions (sin/cos) and, where the embodiment has wrist groups, the wrist poses.
- ``actions`` / ``action_mask`` (horizon, max_action_dim): the chunk a_t..a_{t+H-1},
  normalised with the dataset's stats; steps past the episode end repeat the last action
  and stay in the loss (``past_end='repeat'``, as the official DIAL code does: the policy
  learns to hold still at the end) or are zero with the mask false (``'mask'``). Joint
  dims come from the commanded targets (masked where the frame has no action: human
  episodes); wrist dims (embodiments with eef groups) from the next
  frame's wrist pose, as DIAL uses human wrist poses.
- ``instruction``, ``has_action``, ``embodiment`` (id), ``episode_index``, ``frame_index``.

Memory per process: the frame tables (about 0.4 kB a frame: 12 MB for 30k frames) plus the
decoded-frame LRU cache (``cache_frames`` x S x S x 3 bytes: 77 MB at 512 x 224 px). Frames
are decoded on demand by seeking (a keyframe every 2 frames), about 0.5 ms a frame.
"""
import dataclasses
import json
import pathlib

import numpy as np
import torch

from dial_ros.data.lerobot import IMAGE_KEY, VECTORS, VIDEO_PATH
from dial_ros.data.video import FrameReader
from dial_ros.embodiment import EmbodimentSpec, load_embodiment

PAST_END = ('repeat', 'mask')


def eef_slots(spec):
    """(group, action slice, slice of the 18-D wrist vector) for each eef group of a spec."""
    slots, offset = [], 0
    for group in spec.action_groups:
        if group.kind in ('eef_pos', 'eef_rot6d'):
            name = group.name.lower()
            side = 'right' if 'right' in name else 'left' if 'left' in name else None
            if side is None:
                raise ValueError(f'{spec.name}.action_groups.{group.name}: name must say '
                                 'right or left to take a wrist pose')
            base = 0 if side == 'right' else 9
            wrist = slice(base, base + 3) if group.kind == 'eef_pos' else \
                slice(base + 3, base + 9)
            slots.append((group, slice(offset, offset + group.dim), wrist))
        offset += group.dim
    return slots


def spec_with_dataset_stats(spec, stats, min_std=1e-2):
    """The spec with action mean/std from stats.json (joints: action; wrists: eef)."""
    mean, std = np.zeros(spec.action_dim), np.ones(spec.action_dim)
    act = stats.get('action', {})
    if act.get('count', [0])[0]:
        m, dims = spec.action_from_joints(np.asarray(act['mean']))
        s, _ = spec.action_from_joints(np.asarray(act['std']))
        mean[dims], std[dims] = m[dims], s[dims]
    eef = stats.get('observation.eef', {})
    if eef.get('count', [0])[0]:
        for _, dims, wrist in eef_slots(spec):
            mean[dims], std[dims] = np.asarray(eef['mean'])[wrist], np.asarray(eef['std'])[wrist]
    return spec.with_stats(mean, np.maximum(std, min_std))


def _read_parquets(paths):
    import pyarrow as pa
    import pyarrow.parquet as pq
    return pa.concat_tables([pq.read_table(p) for p in paths]).combine_chunks()


def _column(table, key):
    col = table.column(key).combine_chunks()
    if key in VECTORS:
        return np.asarray(col.flatten().to_numpy(), np.float32).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


@dataclasses.dataclass
class _Episode:
    index: int
    start: int
    length: int
    video: str
    first_frame: int
    human: bool


class DialDataset(torch.utils.data.Dataset):
    """Map-style dataset of DIAL training samples (see the module docstring).

    path: the dataset folder; horizon: action chunk length H; future_offset: frames ahead of
    ``future_image``; embodiment: an ``EmbodimentSpec`` or config name (default: info.json's
    robot_type), its normalisation replaced by the dataset's stats (``self.spec``: put it in
    the model's checkpoint); image_size: frames are resized to it if the video differs;
    human_weight: default share of human samples for ``sample_weights`` / ``mixed_sampler``
    (None: natural share); min_std: floor of the action std (rad or m); cache_frames: decoded
    frames kept per process; episodes: episode indices to use (a split), None for all;
    past_end: 'repeat' or 'mask' the action steps past the episode end.
    """

    def __init__(self, path, horizon=16, future_offset=16, embodiment=None, image_size=224,
                 human_weight=None, max_state_dim=128, max_action_dim=128, min_std=1e-2,
                 cache_frames=512, episodes=None, past_end='repeat'):
        if past_end not in PAST_END:
            raise ValueError(f'past_end: {past_end!r} is not one of {PAST_END}')
        self.past_end = past_end
        self.root = pathlib.Path(path)
        info_path = self.root / 'meta' / 'info.json'
        if not info_path.is_file():
            raise ValueError(f'path: {info_path} not found (not a LeRobot dataset)')
        self.info = json.loads(info_path.read_text())
        if self.info.get('codebase_version') != 'v3.0':
            raise ValueError(f'info.json.codebase_version: {self.info.get("codebase_version")!r}'
                             ' is not v3.0')
        self.fps = self.info['fps']
        self.horizon, self.future_offset, self.image_size = horizon, future_offset, image_size
        self.max_state_dim, self.max_action_dim = max_state_dim, max_action_dim
        self.human_weight = human_weight
        spec = embodiment or self.info['robot_type']
        spec = spec if isinstance(spec, EmbodimentSpec) else load_embodiment(spec)
        names = self.info['features']['observation.state']['names']
        if list(names) != list(spec.joint_names):
            raise ValueError(f'embodiment: {spec.name} joint_names do not match '
                             f'info.json observation.state names ({names[:3]}...)')
        if spec.state_dim > max_state_dim or spec.action_dim > max_action_dim:
            raise ValueError(f'{spec.name}: state/action dims exceed max_state_dim/'
                             f'max_action_dim {max_state_dim}/{max_action_dim}')
        stats = json.loads((self.root / 'meta' / 'stats.json').read_text())
        self.spec = spec_with_dataset_stats(spec, stats, min_std)
        self._slots = eef_slots(self.spec)
        self._load_tables(episodes)
        self._frames = FrameReader(self.fps, cache_frames)
        self.tokens = None

    def use_tokens(self, tokens):
        """Serve ``obs_tokens`` / ``future_tokens`` from {episode: (frames, N, D)} (or a list
        of such arrays, augmented views) instead of decoded frames (see
        ``dial_ros.data.token_cache``)."""
        self.tokens = tokens

    def _load_tables(self, selected):
        meta = self.root / 'meta'
        tasks = _read_parquets([meta / 'tasks.parquet']).to_pydict()
        self.tasks = dict(zip(tasks['task_index'], tasks['task']))
        eps = _read_parquets(sorted((meta / 'episodes').rglob('*.parquet'))).to_pydict()
        data_files = sorted({(c, f) for c, f in zip(eps['data/chunk_index'],
                                                    eps['data/file_index'])})
        table = _read_parquets([self.root / self.info['data_path'].format(
            chunk_index=c, file_index=f) for c, f in data_files])
        order = np.argsort(_column(table, 'index'))
        cols = {k: _column(table, k)[order] for k in
                [*VECTORS, 'has_state', 'has_action', 'has_eef', 'task_index', 'index']}
        if not np.array_equal(cols['index'], np.arange(len(order))):
            raise ValueError(f'{self.root}: data index column is not 0..{len(order) - 1}')
        self.state, self.action, self.eef = (cols['observation.state'], cols['action'],
                                             cols['observation.eef'])
        self.has_state, self.has_action = cols['has_state'], cols['has_action']
        self.has_eef, self.task_index = cols['has_eef'], cols['task_index']
        prefix = f'videos/{IMAGE_KEY}/'
        self.episodes = {}
        for i, ep in enumerate(eps['episode_index']):
            if selected is not None and ep not in selected:
                continue
            video = self.root / VIDEO_PATH.format(video_key=IMAGE_KEY,
                                                  chunk_index=eps[prefix + 'chunk_index'][i],
                                                  file_index=eps[prefix + 'file_index'][i])
            start = eps['dataset_from_index'][i]
            self.episodes[ep] = _Episode(
                ep, start, eps['length'][i], str(video),
                int(round(eps[prefix + 'from_timestamp'][i] * self.fps)),
                eps['source'][i] == 'human' or not self.has_action[
                    start:start + eps['length'][i]].any())
        # per-episode sampling weight (the conversion's --intervention-weight; 1 if absent)
        weights = eps.get('weight') or [1.0] * len(eps['episode_index'])
        self.episode_weight = {ep: 1.0 if w is None else float(w)
                               for ep, w in zip(eps['episode_index'], weights)
                               if ep in self.episodes}
        self._samples = np.concatenate([np.arange(e.start, e.start + e.length)
                                        for e in self.episodes.values()] or [np.zeros(0, int)])
        self._episode_of = np.zeros(len(order), int)
        for e in self.episodes.values():
            self._episode_of[e.start:e.start + e.length] = e.index

    def __len__(self):
        return len(self._samples)

    def image(self, episode, t):
        """Frame ``t`` of an episode, uint8 (image_size, image_size, 3)."""
        e = self.episodes[episode]
        frame = self._frames.frame(e.video, e.first_frame + t)
        if frame.shape[:2] != (self.image_size, self.image_size):
            from PIL import Image
            frame = np.asarray(Image.fromarray(frame).resize(
                (self.image_size, self.image_size), Image.BILINEAR))
        return frame

    def __getitem__(self, index):
        """Sample ``index``, or ``(index, view)`` to read augmented token view ``view``."""
        i, view = index if isinstance(index, tuple) else (index, 0)
        row = int(self._samples[i])
        e = self.episodes[int(self._episode_of[row])]
        t, n, spec = row - e.start, e.length, self.spec
        wrists = {g.name: self.eef[row, w] for g, _, w in self._slots} \
            if self.has_eef[row] else None
        state, state_mask = spec.encode_state(self.state[row] if self.has_state[row] else None,
                                              wrists)
        steps = t + np.arange(self.horizon)
        rows = e.start + np.minimum(steps, n - 1)
        action, dims = spec.action_from_joints(self.action[rows])
        inside = (steps < n) if self.past_end == 'mask' else np.ones(len(steps), bool)
        mask = (inside & self.has_action[rows])[:, None] & dims[None]
        if self._slots:
            nxt = e.start + np.minimum(steps + 1, n - 1)
            ok = (steps + 1 < n) & self.has_eef[nxt]
            for _, cols, w in self._slots:
                action[:, cols] = self.eef[nxt][:, w]
                mask[:, cols] = ok[:, None]
        action = np.where(mask, spec.normalize_action(action), 0.0)
        actions = np.zeros((self.horizon, self.max_action_dim), np.float32)
        action_mask = np.zeros((self.horizon, self.max_action_dim), bool)
        actions[:, :spec.action_dim], action_mask[:, :spec.action_dim] = action, mask
        state_out = np.zeros(self.max_state_dim, np.float32)
        state_mask_out = np.zeros(self.max_state_dim, bool)
        state_out[:spec.state_dim], state_mask_out[:spec.state_dim] = state, state_mask
        future = min(t + self.future_offset, n - 1)
        if self.tokens is not None:
            cached = self.tokens[e.index]
            if isinstance(cached, list):   # augmented views: the same one for both frames
                cached = cached[view % len(cached)]
            frames = {'obs_tokens': np.asarray(cached[t]),
                      'future_tokens': np.asarray(cached[future])}
        else:
            frames = {'image': self.image(e.index, t), 'future_image': self.image(e.index, future)}
        return {**frames, 'state': state_out, 'state_mask': state_mask_out, 'actions': actions,
                'action_mask': action_mask, 'instruction': self.tasks[int(self.task_index[row])],
                'has_action': bool(self.has_action[row]), 'embodiment': spec.embodiment_id,
                'episode_index': e.index, 'frame_index': t}

    def is_human(self):
        """(len,) bool: the sample comes from an episode without actions (human video)."""
        human = np.zeros(len(self._episode_of), bool)
        for e in self.episodes.values():
            human[e.start:e.start + e.length] = e.human
        return human[self._samples]

    def sample_weights(self, human_weight=None):
        """Per-sample weights so that human samples make up ``human_weight`` of the draws.

        None (and ``self.human_weight`` None) keeps the natural proportion. Within that, a
        sample is drawn in proportion to its episode's ``weight`` (the conversion's
        ``--intervention-weight``; 1 for episodes without one).
        """
        weight = self.human_weight if human_weight is None else human_weight
        rows = np.ones(len(self._episode_of))
        for e in self.episodes.values():
            rows[e.start:e.start + e.length] = self.episode_weight.get(e.index, 1.0)
        out = rows[self._samples]
        if weight is None:
            return out
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f'human_weight: {weight} is not in [0, 1]')
        human = self.is_human()
        if human.all() or not human.any():
            return out
        out[human] *= weight / out[human].sum()
        out[~human] *= (1.0 - weight) / out[~human].sum()
        return out


def mixed_sampler(dataset, human_weight=None, num_samples=None, generator=None):
    """A WeightedRandomSampler (with replacement) mixing human samples at ``human_weight``."""
    weights = torch.as_tensor(dataset.sample_weights(human_weight), dtype=torch.double)
    return torch.utils.data.WeightedRandomSampler(weights, num_samples or len(dataset),
                                                  replacement=True, generator=generator)


def collate(samples):
    """The batch dict of ``DialModel.compute_loss``; images stay uint8 NumPy (B, S, S, 3)."""
    def stack(key, dtype):
        return torch.as_tensor(np.stack([s[key] for s in samples]), dtype=dtype)
    if 'obs_tokens' in samples[0]:
        frames = {'obs_tokens': stack('obs_tokens', torch.float32),
                  'future_tokens': stack('future_tokens', torch.float32)}
    else:
        frames = {'images': np.stack([s['image'] for s in samples]),
                  'future_images': np.stack([s['future_image'] for s in samples])}
    return {**frames, 'instructions': [s['instruction'] for s in samples],
            'state': stack('state', torch.float32), 'state_mask': stack('state_mask', torch.bool),
            'actions': stack('actions', torch.float32),
            'action_mask': stack('action_mask', torch.bool),
            'embodiment': torch.tensor([s['embodiment'] for s in samples], dtype=torch.long),
            'has_action': torch.tensor([s['has_action'] for s in samples], dtype=torch.bool),
            'episode_index': torch.tensor([s['episode_index'] for s in samples])}
