"""Embodiment spec: joint order, action/state layout, limits and normalisation, from YAML.

The action vector is a concatenation of groups (joint positions, end-effector position,
end-effector rotation as 6-D). The state vector mirrors the action groups: joint groups as
positions (or sin/cos when configured), end-effector groups raw. Parts of the state or
action that a sample does not have (a human demo has wrist poses but no joints) are masked.
"""
import dataclasses
import pathlib

import numpy as np
import yaml

from dial_ros import paths

GROUP_DIMS = {'eef_pos': 3, 'eef_rot6d': 6}
GROUP_KINDS = ('joint', 'eef_pos', 'eef_rot6d')


@dataclasses.dataclass
class ActionGroup:
    """A contiguous block of the action vector."""

    name: str
    kind: str
    joints: list = dataclasses.field(default_factory=list)

    @property
    def dim(self):
        return len(self.joints) if self.kind == 'joint' else GROUP_DIMS[self.kind]


@dataclasses.dataclass
class EmbodimentSpec:
    """Everything the model and the controller need to know about one robot."""

    name: str
    embodiment_id: int
    joint_names: list
    action_groups: list
    sin_cos_state: bool
    position_lower: np.ndarray
    position_upper: np.ndarray
    velocity_limit: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def __post_init__(self):
        self._check()
        self._joint_action_index = []
        self._state_slices = []
        offset = state_offset = 0
        for group in self.action_groups:
            if group.kind == 'joint':
                self._joint_action_index += list(range(offset, offset + group.dim))
            width = group.dim * (2 if group.kind == 'joint' and self.sin_cos_state else 1)
            self._state_slices.append((group, slice(state_offset, state_offset + width)))
            offset += group.dim
            state_offset += width
        self.action_dim = offset
        self.state_dim = state_offset
        self._joint_order = {n: i for i, n in enumerate(self.joint_names)}
        # action index of each joint in joint_names order (joint_targets runs every chunk)
        in_group_order = [j for g in self.action_groups if g.kind == 'joint' for j in g.joints]
        self._joint_target_index = np.asarray(
            [self._joint_action_index[in_group_order.index(j)] for j in self.joint_names])
        self._joint_action_index = np.asarray(self._joint_action_index)
        # action dims left raw by normalisation (rotations as 6-D)
        self._raw_dims = np.zeros(self.action_dim, bool)
        offset = 0
        for group in self.action_groups:
            if group.kind == 'eef_rot6d':
                self._raw_dims[offset:offset + group.dim] = True
            offset += group.dim

    def _check(self):
        n = len(self.joint_names)
        if n == 0 or len(set(self.joint_names)) != n:
            raise ValueError(f'{self.name}.joint_names: must be non-empty and unique')
        grouped = []
        for group in self.action_groups:
            if group.kind not in GROUP_KINDS:
                raise ValueError(f'{self.name}.action_groups.{group.name}.kind: {group.kind!r} '
                                 f'is not one of {GROUP_KINDS}')
            grouped += group.joints
        if sorted(grouped) != sorted(self.joint_names):
            missing = sorted(set(self.joint_names) ^ set(grouped))
            raise ValueError(f'{self.name}.action_groups: joints must cover joint_names exactly '
                             f'once (mismatch: {missing[:5]})')
        for field in ('position_lower', 'position_upper', 'velocity_limit'):
            value = getattr(self, field)
            if value.shape != (n,):
                raise ValueError(f'{self.name}.limits.{field}: expected {n} values, '
                                 f'got {value.shape[0] if value.ndim else value}')
        if np.any(self.position_lower >= self.position_upper):
            raise ValueError(f'{self.name}.limits: position_lower must be < position_upper')
        if np.any(self.velocity_limit <= 0):
            raise ValueError(f'{self.name}.limits.velocity: must be positive')
        dim = sum(g.dim for g in self.action_groups)
        for field in ('action_mean', 'action_std'):
            if getattr(self, field).shape != (dim,):
                raise ValueError(f'{self.name}.normalization.{field}: expected {dim} values')
        if np.any(self.action_std <= 0):
            raise ValueError(f'{self.name}.normalization.action_std: must be positive')

    @property
    def num_joints(self):
        return len(self.joint_names)

    # --- actions -------------------------------------------------------------------------
    def normalize_action(self, action):
        """Joint/EEF units -> model units (mean/std per dim; 6-D rotations left raw)."""
        out = (action - self.action_mean) / self.action_std
        return np.where(self._raw_dims, action, out)

    def denormalize_action(self, action):
        """Model units -> joint/EEF units."""
        out = action * self.action_std + self.action_mean
        return np.where(self._raw_dims, action, out)

    def joint_targets(self, action):
        """Joint positions (in joint_names order) from action vector(s) ``[..., action_dim]``."""
        return action[..., self._joint_target_index]

    def action_from_joints(self, joint_positions):
        """Action vector(s) with only the joint groups filled, plus its mask."""
        joint_positions = np.asarray(joint_positions, np.float64)
        action = np.zeros(joint_positions.shape[:-1] + (self.action_dim,))
        mask = np.zeros(self.action_dim, bool)
        offset = 0
        for group in self.action_groups:
            if group.kind == 'joint':
                idx = [self._joint_order[j] for j in group.joints]
                action[..., offset:offset + group.dim] = joint_positions[..., idx]
                mask[offset:offset + group.dim] = True
            offset += group.dim
        return action, mask

    # --- state ---------------------------------------------------------------------------
    def encode_state(self, joint_positions=None, eef=None):
        """State vector and mask from joint positions and/or end-effector values by group."""
        state = np.zeros(self.state_dim, np.float32)
        mask = np.zeros(self.state_dim, bool)
        eef = eef or {}
        for group, sl in self._state_slices:
            if group.kind == 'joint':
                if joint_positions is None:
                    continue
                q = np.asarray([joint_positions[self._joint_order[j]] for j in group.joints])
                state[sl] = (np.concatenate([np.sin(q), np.cos(q)]) if self.sin_cos_state else q)
                mask[sl] = True
            elif group.name in eef:
                state[sl] = np.asarray(eef[group.name], np.float32).reshape(group.dim)
                mask[sl] = True
        return state, mask

    def with_stats(self, mean, std):
        """A copy with new normalisation statistics (from a dataset)."""
        return dataclasses.replace(self, action_mean=np.asarray(mean, np.float64),
                                   action_std=np.maximum(np.asarray(std, np.float64), 1e-6))

    def to_dict(self):
        return {
            'name': self.name,
            'embodiment_id': self.embodiment_id,
            'joint_names': list(self.joint_names),
            'action_groups': [dataclasses.asdict(g) for g in self.action_groups],
            'state': {'sin_cos': self.sin_cos_state},
            'limits': {'position_lower': self.position_lower.tolist(),
                       'position_upper': self.position_upper.tolist(),
                       'velocity': self.velocity_limit.tolist()},
            'normalization': {'action_mean': self.action_mean.tolist(),
                              'action_std': self.action_std.tolist()},
        }

    @classmethod
    def from_dict(cls, data):
        name = data.get('name', '<embodiment>')
        for key in ('name', 'embodiment_id', 'joint_names', 'action_groups', 'limits'):
            if key not in data:
                raise ValueError(f'{name}.{key}: missing')
        groups = []
        for g in data['action_groups']:
            group = ActionGroup(name=g['name'], kind=g['kind'], joints=list(g.get('joints', [])))
            if group.kind not in GROUP_KINDS:
                raise ValueError(f'{name}.action_groups.{group.name}.kind: {group.kind!r} '
                                 f'is not one of {GROUP_KINDS}')
            groups.append(group)
        dim = sum(g.dim for g in groups)
        limits = data['limits']
        norm = data.get('normalization') or {}
        return cls(
            name=data['name'],
            embodiment_id=int(data['embodiment_id']),
            joint_names=list(data['joint_names']),
            action_groups=groups,
            sin_cos_state=bool((data.get('state') or {}).get('sin_cos', True)),
            position_lower=np.asarray(limits['position_lower'], np.float64),
            position_upper=np.asarray(limits['position_upper'], np.float64),
            velocity_limit=np.asarray(limits['velocity'], np.float64),
            action_mean=np.asarray(norm.get('action_mean', np.zeros(dim)), np.float64),
            action_std=np.asarray(norm.get('action_std', np.ones(dim)), np.float64),
        )


def load_embodiment(name_or_path):
    """Load an embodiment by name (``config/embodiments/<name>.yaml``) or by file path."""
    path = pathlib.Path(name_or_path)
    if not path.suffix:
        try:
            path = paths.config_file('embodiments', f'{name_or_path}.yaml')
        except FileNotFoundError as err:
            raise FileNotFoundError(f'embodiment config not found: {err}') from None
    if not path.is_file():
        raise FileNotFoundError(f'embodiment config not found: {path}')
    with open(path) as f:
        return EmbodimentSpec.from_dict(yaml.safe_load(f))
