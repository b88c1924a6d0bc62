"""Evaluation splits from a YAML file: each split is a set of TaskSpec overrides.

    splits:
      seen: {description: training distribution, held-out seeds, task: {}}
      distractors: {task: {n_distractors: 3}}
    seed_base: 100000
    episode_timeout_s: 15.0

A new split is a new entry; ``task`` holds any TaskSpec fields (dial_ros.sim.gr1_env) and is
sent to the sim node's ``task`` parameter. Episode seeds are ``seed_base + 1000 * (position
of the split in the file) + episode``: disjoint from the recording seeds (0, 1, ...) and the
same for every model, so methods face the same cube placements.
"""
import dataclasses
import pathlib

import yaml

from dial_ros.sim.gr1_env import TaskSpec

SEED_STRIDE = 1000


@dataclasses.dataclass
class Split:
    name: str
    task: dict
    first_seed: int
    description: str = ''

    def seed(self, episode):
        return self.first_seed + episode


@dataclasses.dataclass
class EvalPlan:
    splits: list
    episode_timeout_s: float
    source: str


def load_splits(path, only=None, seed_base=None):
    """EvalPlan from ``path``; ``only``: split names to keep (in file order); ``seed_base``
    replaces the file's (validation seeds for checkpoint selection, say). ValueError names
    the bad entry."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f'splits: {path} not found')
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get('splits')
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f'{path}: splits: expected a mapping of split name -> entry')
    fields = {f.name for f in dataclasses.fields(TaskSpec)}
    seed_base = data.get('seed_base', 100000) if seed_base is None else seed_base
    timeout = data.get('episode_timeout_s', 15.0)
    if not isinstance(seed_base, int) or seed_base < 0:
        raise ValueError(f'{path}: seed_base: expected an int >= 0, got {seed_base!r}')
    if not isinstance(timeout, (int, float)) or not 1.0 <= timeout <= 600.0:
        raise ValueError(f'{path}: episode_timeout_s: expected 1..600 s, got {timeout!r}')
    splits = []
    for position, (name, entry) in enumerate(entries.items()):
        entry = entry or {}
        where = f'{path}: splits.{name}'
        if not isinstance(entry, dict) or set(entry) - {'task', 'description'}:
            raise ValueError(f'{where}: expected keys task and description only')
        task = entry.get('task') or {}
        if not isinstance(task, dict):
            raise ValueError(f'{where}.task: expected a mapping of TaskSpec fields')
        unknown = sorted(set(task) - fields)
        if unknown:
            raise ValueError(f'{where}.task: unknown TaskSpec fields {unknown} '
                             f'(known: {sorted(fields)})')
        try:
            dataclasses.replace(TaskSpec(), **task)
        except TypeError as err:
            raise ValueError(f'{where}.task: {err}') from None
        splits.append(Split(str(name), task, seed_base + SEED_STRIDE * position,
                            str(entry.get('description', ''))))
    if only:
        missing = sorted(set(only) - {s.name for s in splits})
        if missing:
            raise ValueError(f'--split: {missing} not in {path} '
                             f'(has {[s.name for s in splits]})')
        splits = [s for s in splits if s.name in only]
    return EvalPlan(splits, float(timeout), str(path))
