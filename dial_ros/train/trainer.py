"""The DIAL trainer: two stages, AdamW + warmup/cosine, metrics, checkpoints, exact resume.

Run state lives in ``RUN_DIR``: ``train_config.yaml``, ``metrics.csv``, ``losses.png``
(moving averages) and ``checkpoints/step_XXXXXX/`` (a model checkpoint plus
``trainer_state.json`` and ``trainer_state.safetensors``: optimizer, scheduler, step and RNG
states; no pickle). ``checkpoints/latest`` points at the newest one.

Batches are drawn per step from a generator seeded by (seed, rank, step), so resuming
replays the same data order whatever the loader does; the torch, NumPy and Python RNG states
are restored, so a resumed run reproduces an uninterrupted one bit for bit.
"""
import csv
import dataclasses
import importlib.util
import json
import logging
import math
import os
import pathlib
import random
import time

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from dial_ros.data.augment import Augment
from dial_ros.data.dataset import DialDataset, collate, mixed_sampler
from dial_ros.data.token_cache import load_token_cache, token_stats
from dial_ros.model.checkpoint import load_checkpoint, save_checkpoint
from dial_ros.model.config import ModelConfig, paper_config, tiny_config
from dial_ros.model.dial import DialModel, RECIPE_STAGES
from dial_ros.schema import from_dict, setting, to_dict, validate
from dial_ros.train.ema import WeightAverage
from dial_ros.train.step import build_optimizer, stage_at, sync_optimizer, train_step

LOG = logging.getLogger(__name__)
METRICS = ('step', 'stage', 'loss', 'loss_world', 'loss_fm', 'lr', 'grad_norm', 'seconds')
STATE_JSON, STATE_TENSORS = 'trainer_state.json', 'trainer_state.safetensors'


@dataclasses.dataclass
class TrainConfig:
    """Every training setting; the CLI flags and the YAML file are views of these fields."""

    steps: int = setting(1000, 'total optimizer steps (the schedule spans them)', low=1)
    stop_at: int = setting(0, 'stop after this global step, to split a run (0 = steps)', low=0)
    batch_size: int = setting(8, 'samples per step (per process)', low=1)
    lr: float = setting(1e-4, 'peak learning rate', low=0.0, high=1.0)
    betas: list = setting([0.95, 0.999], 'AdamW betas')
    weight_decay: float = setting(1e-5, 'AdamW weight decay', low=0.0)
    warmup_ratio: float = setting(0.05, 'share of steps (of each stage, with '
                                  'restart_per_stage) with a linear lr warmup',
                                  low=0.0, high=1.0)
    restart_per_stage: bool = setting(True, 'each stage restarts AdamW and its own warmup + '
                                      'cosine from the peak rate, as the official code\'s '
                                      'separate stage runs do (false: one schedule over all '
                                      'steps, the optimizer state carried over)')
    first_stage_fraction: float = setting(0.5, 'share of steps in the first stage',
                                          low=0.0, high=1.0)
    human_weight: float = setting(-1.0, 'share of human-video samples (-1 = natural share)',
                                  low=-1.0, high=1.0)
    seed: int = setting(0, 'seed of the model, the data order and the noise', low=0)
    save_every: int = setting(1000, 'checkpoint interval in steps (the last step is always '
                              'saved)', low=1)
    log_every: int = setting(10, 'log line interval in steps', low=1)
    recipe: str = setting('dial', 'dial (warmup, end_to_end) or apt (apt_prior, '
                          'apt_language)', choices=tuple(RECIPE_STAGES))
    scale: str = setting('tiny', 'model scale', choices=('tiny', 'paper'))
    vlm_path: str = setting('', 'local Qwen2.5-VL folder (paper scale)')
    num_workers: int = setting(0, 'data loader worker processes', low=0, high=64)
    episodes: int = setting(0, 'train on the first N episodes of the dataset only (0 = all): '
                            'sample-efficiency runs', low=0)
    cache_tokens: bool = setting(True, 'encode every frame with the frozen ViT once '
                                 '(DATASET/cache) instead of twice per sample per step')
    augment_views: int = setting(0, 'augmented views per episode in the token cache (random '
                                 'crop + colour jitter, the same for the current and the '
                                 'future frame); a view is drawn per sample; 0 = none',
                                 low=0, high=64)
    augment: dict = setting({}, 'augmentation ranges overriding dial_ros.data.augment.Augment '
                            '(crop_scale, brightness, contrast, saturation, hue)')
    grad_clip: float = setting(1.0, 'gradient norm clip', low=0.0)
    ema_decay: float = setting(0.0, 'checkpoints hold an exponential moving average of the '
                               'weights with this decay, restarted per stage (0 = the raw '
                               'weights)', low=0.0, high=0.99999)
    state_dropout: float = setting(0.0, 'share of samples whose robot state is hidden (mask '
                                   'off, as for a sample without joint readings), so that '
                                   'the policy cannot copy its next target from the state '
                                   'alone', low=0.0, high=1.0)
    model: dict = setting({}, 'ModelConfig overrides, nested as in dial_config.yaml, e.g. '
                          '{system1: {dit_hidden: 128}} (recipe and embodiments come from here)')

    def validate(self):
        """Range/choice checks plus the cross-field ones; ValueError names the field."""
        validate(self)
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0
                                           for b in self.betas):
            raise ValueError(f'betas: expected two numbers in [0, 1), got {self.betas!r}')
        if self.augment_views and not self.cache_tokens:
            raise ValueError('augment_views: needs cache_tokens (views live in the cache)')
        try:
            Augment(**self.augment)
        except (TypeError, ValueError) as err:
            raise ValueError(f'augment: {err}') from None
        if self.stop_at > self.steps:
            raise ValueError(f'stop_at: {self.stop_at} is beyond steps {self.steps}')
        if self.scale == 'paper' and not self.vlm_path:
            raise ValueError('vlm_path: the paper scale needs a local Qwen2.5-VL folder')
        if self.recipe == 'groot' and self.first_stage_fraction not in (0.0, 0.5, 1.0):
            LOG.info('first_stage_fraction: ignored by the one-stage groot recipe')
        return self

    @classmethod
    def from_dict(cls, data):
        return from_dict(cls, data).validate()


def stage_spans(config):
    """[(first step, end step)] of the schedule's segments: one per stage when each stage
    restarts its schedule, else one over the whole run."""
    first, second = RECIPE_STAGES[config.recipe]
    boundary = math.ceil(config.steps * config.first_stage_fraction)
    if config.restart_per_stage and first != second and 0 < boundary < config.steps:
        return [(0, boundary), (boundary, config.steps)]
    return [(0, config.steps)]


def lr_lambda(config):
    """Per segment (``stage_spans``): linear warmup to 1, then cosine decay to 0."""
    spans = stage_spans(config)

    def factor(step):
        start, end = next(((a, b) for a, b in spans if step < b), spans[-1])
        warmup, k = int((end - start) * config.warmup_ratio), step - start
        if k < warmup:
            return (k + 1) / (warmup + 1)
        progress = (k - warmup) / max(1, end - start - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def model_config_with(base, overrides):
    """``base`` (a ModelConfig) with nested ``overrides``; ValueError names a bad key as
    ``model.<path>``."""
    def merge(into, extra, path):
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value, f'{path}{key}.')
            else:
                into[key] = value
        return into
    data = merge(base.to_dict(), overrides or {}, '')
    for key in ('recipe', 'embodiments'):
        if key in (overrides or {}):
            raise ValueError(f'model.{key}: set it with the training option, not here')
    try:
        return ModelConfig.from_dict(data)
    except ValueError as err:
        raise ValueError(f'model.{err}') from None


def first_episodes(path, count):
    """The indices of the first ``count`` episodes of a dataset (None: all of them)."""
    if not count:
        return None
    total = json.loads((pathlib.Path(path) / 'meta' / 'info.json').read_text())['total_episodes']
    if count > total:
        raise ValueError(f'episodes: {count} requested, the dataset has {total}')
    return set(range(count))


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def distributed():
    """(rank, world size); initialises torch.distributed when launched by torchrun."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not torch.distributed.is_initialized():
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))
    return int(os.environ.get('RANK', '0')), world


class _LossModule(torch.nn.Module):
    """forward = compute_loss, so DistributedDataParallel can sync the gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.compute_loss(batch)


class _DDPView:
    """What ``train_step`` needs of a model, backed by a DDP-wrapped ``_LossModule``."""

    def __init__(self, model):
        self.model = model
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            _LossModule(model), find_unused_parameters=True)
        self.stage = model.stage
        self.parameters, self.train = model.parameters, model.train

    def compute_loss(self, batch):
        return self.ddp(batch)


class Progress:
    """Progress bar (tqdm if installed), metrics CSV rows and the loss plot at the end."""

    def __init__(self, path, fields, start, end, enabled=True):
        self.path, self.fields, self.enabled, self.rows = path, fields, enabled, []
        self.bar = None
        if not enabled:
            return
        if path.exists():  # a resumed run: keep the rows before ``start``
            with open(path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['step']) <= start]
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(self.rows)
        if importlib.util.find_spec('tqdm') is not None:
            from tqdm import tqdm
            self.bar = tqdm(total=end, initial=start, desc='train', dynamic_ncols=True)

    def update(self, metrics, log=False):
        if not self.enabled:
            return
        row = {k: metrics[k] for k in self.fields}
        self.rows.append(row)
        with open(self.path, 'a', newline='') as f:
            csv.DictWriter(f, self.fields).writerow(row)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(stage=row['stage'], loss=f'{row["loss"]:.4f}')
        if log or self.bar is None:
            LOG.info('step %d %s loss %.4f (world %.4f fm %.4f) lr %.2e grad %.3f',
                     row['step'], row['stage'], row['loss'], row['loss_world'],
                     row['loss_fm'], row['lr'], row['grad_norm'])

    def close(self):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        plot_losses(self.path, self.path.with_name('losses.png'))


def plot_losses(csv_path, png_path):
    """Loss curves from the metrics CSV; skipped (with a note) without matplotlib."""
    if importlib.util.find_spec('matplotlib') is None:
        LOG.info('matplotlib is not installed: %s not written', png_path.name)
        return None
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [int(r['step']) for r in rows]
    window = max(1, len(rows) // 100)  # moving average: per-step losses are noisy
    for key in ('loss', 'loss_world', 'loss_fm'):
        values = np.array([float(r[key]) for r in rows])
        if not np.any(values > 0):
            continue  # e.g. loss_world of the groot baseline
        smooth = np.convolve(values, np.ones(window) / window, mode='valid')
        ax.plot(steps[window - 1:], smooth, label=key)
    ax.set_xlabel('step')
    ax.set_yscale('log')
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


class Trainer:
    """One training run in ``out`` on the dataset at ``dataset``."""

    def __init__(self, config, dataset, out, resume=False):
        self.config, self.out = config, pathlib.Path(out)
        self.rank, self.world = distributed()
        self.device = torch.device(f'cuda:{torch.cuda.current_device()}'
                                   if torch.cuda.is_available() else 'cpu')
        self.ckpt_dir = self.out / 'checkpoints'
        self.out.mkdir(parents=True, exist_ok=True)
        self.start = 0
        seed_everything(config.seed)
        stages = RECIPE_STAGES[config.recipe]
        latest = self.ckpt_dir / 'latest'
        if resume and latest.exists():
            self.model = load_checkpoint(latest, self.device)
        else:
            if resume:
                LOG.warning('resume: no checkpoint in %s, starting fresh', self.ckpt_dir)
            resume = False
        self.dataset = self._dataset(dataset, None if not resume else self.model)
        if not resume:
            self.model = self._build_model().to(self.device)
        if config.cache_tokens:
            self.dataset.use_tokens(load_token_cache(
                self.dataset, self.model, views=config.augment_views,
                augment=Augment(**config.augment)))
        if not resume and self.model.token_norm is not None:
            if not config.cache_tokens:
                raise ValueError('model.center_tokens: needs cache_tokens (the statistics come '
                                 'from the token cache)')
            mean, scale = token_stats(self.dataset.tokens)
            self.model.token_norm.set_stats(mean, scale)
            LOG.info('token centring: scale %.4f (token rms %.4f)', scale,
                     float(np.sqrt(np.mean(mean ** 2) + scale ** 2)))
        self.optimizer = build_optimizer(self.model, config.lr, tuple(config.betas),
                                         config.weight_decay)
        if resume:
            self.optimizer.param_groups.clear()
            self.optimizer.state.clear()
            self._load_state(latest)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        if resume:
            self.optimizer.load_state_dict(self._optimizer_state)
            self.scheduler.load_state_dict(self._scheduler_state)
        self.stages = stages
        self.ema = None
        if config.ema_decay:
            # starts from the model's weights: on resume those are the saved average
            self.ema = WeightAverage(self.model, config.ema_decay)
            if resume:
                self._restore_raw_weights()
        if self.rank == 0:
            with open(self.out / 'train_config.yaml', 'w') as f:
                yaml.safe_dump(to_dict(config), f, sort_keys=False)

    # --- setup ---------------------------------------------------------------------------
    def _dataset(self, path, model):
        cfg = model.config if model is not None else self._model_config()
        ds = DialDataset(path, horizon=cfg.system1.horizon, future_offset=cfg.foresight_horizon,
                         image_size=cfg.vlm.image_size, max_state_dim=cfg.system1.max_state_dim,
                         max_action_dim=cfg.system1.max_action_dim,
                         episodes=first_episodes(path, self.config.episodes))
        LOG.info('dataset %s: %d episodes, %d samples', path, len(ds.episodes), len(ds))
        human = None if self.config.human_weight < 0 else self.config.human_weight
        self.weights = torch.as_tensor(ds.sample_weights(human), dtype=torch.double)
        return ds

    def _model_config(self, name='gr1_sim'):
        c = self.config
        if c.scale == 'tiny':
            base = tiny_config(embodiments=[name], recipe=c.recipe)
        else:
            base = paper_config(c.vlm_path, embodiments=[name], recipe=c.recipe)
        return model_config_with(base, c.model)

    def _build_model(self):
        """The model for the dataset's embodiment, carrying the dataset's normalisation."""
        spec = self.dataset.spec
        return DialModel(self._model_config(spec.name), [spec])

    def batch_indices(self, step):
        """The sample indices of a global step (independent of loader and history)."""
        generator = torch.Generator().manual_seed(
            (self.config.seed * 1_000_003 + self.rank) * 1_000_003 + step)
        self.generator = generator
        sampler = mixed_sampler(self.dataset, None, self.config.batch_size, generator)
        sampler.weights = self.weights
        indices = list(sampler)
        if not self.config.augment_views:
            return indices
        views = torch.randint(self.config.augment_views, (len(indices),), generator=generator)
        return list(zip(indices, views.tolist()))

    def batches(self):
        """Yield (step, batch) from ``self.start``; workers load whole batches."""
        end = self.config.stop_at or self.config.steps
        steps = range(self.start, end)
        if self.config.num_workers == 0:
            for step in steps:
                yield step, collate([self.dataset[i] for i in self.batch_indices(step)])
            return
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[self.batch_indices(s) for s in steps],
            collate_fn=collate, num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(self.config.seed))
        yield from zip(steps, loader)

    # --- training ------------------------------------------------------------------------
    def _set_stage(self, stage):
        if self.model.stage != stage:
            LOG.info('stage %s -> %s', self.model.stage, stage)
            self.model.set_stage(stage)
            if self.config.restart_per_stage:
                self.optimizer.state.clear()  # AdamW starts afresh, as a new run would
            if self.ema is not None:
                self.ema.reset()  # the stage may have added parameters
        added = sync_optimizer(self.model, self.optimizer)
        if added:
            factor = lr_lambda(self.config)
            group = self.optimizer.param_groups[-1]
            group['initial_lr'] = self.config.lr
            group['lr'] = self.config.lr * factor(self.scheduler.last_epoch)
            self.scheduler.base_lrs.append(self.config.lr)
            self.scheduler.lr_lambdas.append(factor)
            self.scheduler._last_lr.append(group['lr'])

    def run(self):
        """Train to ``stop_at`` (or ``steps``); returns the last step's metrics."""
        c = self.config
        end = c.stop_at or c.steps
        progress = Progress(self.out / 'metrics.csv', METRICS, self.start, end,
                            enabled=self.rank == 0)
        metrics, view = {}, None
        for step, batch in self.batches():
            stage = stage_at(step, c.steps, c.recipe, c.first_stage_fraction)
            if stage != self.model.stage or view is None:
                self._set_stage(stage)
                view = _DDPView(self.model) if self.world > 1 else self.model
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
            if c.state_dropout:
                g = torch.Generator().manual_seed(c.seed * 1_000_003 + step)
                drop = torch.rand(len(batch['state_mask']), generator=g) < c.state_dropout
                batch['state_mask'] = batch['state_mask'] & ~drop[:, None].to(self.device)
            lr = self.optimizer.param_groups[0]['lr']
            tic = time.monotonic()
            metrics = train_step(view, batch, self.optimizer, c.grad_clip, self.scheduler)
            if self.ema is not None:
                self.ema.update()
            metrics.update(step=step + 1, stage=stage, lr=lr,
                           seconds=round(time.monotonic() - tic, 4))
            progress.update(metrics, log=(step + 1) % c.log_every == 0)
            if (step + 1) % c.save_every == 0 or step + 1 == end:
                self.save(step + 1)
        progress.close()
        return metrics

    # --- state ---------------------------------------------------------------------------
    def save(self, step):
        """Checkpoint folder ``step_XXXXXX`` with the full trainer state; update latest."""
        if self.rank != 0:
            return
        demos = sum(not e.human for e in self.dataset.episodes.values())
        extra = {'step': step, 'train': to_dict(self.config), 'demos': demos,
                 'dataset': str(self.dataset.root)}
        raw = {}
        if self.ema is None:
            path = save_checkpoint(self.model, self.ckpt_dir / f'step_{step:06d}', extra)
        else:  # the checkpoint deploys the average; the raw weights resume the run
            with self.ema.swapped_in() as raw:
                path = save_checkpoint(self.model, self.ckpt_dir / f'step_{step:06d}', extra)
        names = {id(p): n for n, p in self.model.named_parameters()}
        opt = self.optimizer.state_dict()
        tensors = {f'optimizer.{i}.{k}': v.detach().cpu().contiguous()
                   for i, s in opt['state'].items() for k, v in s.items()}
        tensors.update({f'raw.{name}': value.cpu().contiguous() for name, value in raw.items()})
        tensors['rng.torch'] = torch.get_rng_state()
        tensors['rng.sampler'] = self.generator.get_state()
        if torch.cuda.is_available():
            tensors['rng.cuda'] = torch.cuda.get_rng_state()
        np_state = np.random.get_state()
        state = {
            'step': step, 'stage': self.model.stage, 'config': to_dict(self.config),
            'optimizer_groups': [{k: v for k, v in g.items() if k != 'params'}
                                 for g in opt['param_groups']],
            'optimizer_params': [g['params'] for g in opt['param_groups']],
            'param_names': [[names[id(p)] for p in g['params']]
                            for g in self.optimizer.param_groups],
            'scheduler': self.scheduler.state_dict(),
            'ema_updates': self.ema.updates if self.ema is not None else 0,
            'rng_numpy': [np_state[0], np_state[1].tolist(), *np_state[2:]],
            'rng_python': [random.getstate()[0], list(random.getstate()[1]),
                           random.getstate()[2]],
        }
        save_file(tensors, str(path / STATE_TENSORS))
        (path / STATE_JSON).write_text(json.dumps(state))
        tmp = self.ckpt_dir / 'latest.tmp'
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(path.name, target_is_directory=True)
        os.replace(tmp, self.ckpt_dir / 'latest')
        LOG.info('saved %s', path)

    def _load_state(self, path):
        state = json.loads((path / STATE_JSON).read_text())
        tensors = load_file(str(path / STATE_TENSORS))
        params = dict(self.model.named_parameters())
        for names, group in zip(state['param_names'], state['optimizer_groups']):
            self.optimizer.add_param_group({**group, 'params': [params[n] for n in names]})
        opt_state = {}
        for key, value in tensors.items():
            if key.startswith('optimizer.'):
                _, i, k = key.split('.', 2)
                opt_state.setdefault(int(i), {})[k] = value
        self._optimizer_state = {
            'state': opt_state,
            'param_groups': [{**g, 'params': p} for g, p in
                             zip(state['optimizer_groups'], state['optimizer_params'])]}
        self._scheduler_state = state['scheduler']
        self._raw_weights = {k[4:]: v for k, v in tensors.items() if k.startswith('raw.')}
        self._ema_updates = state.get('ema_updates', 0)
        torch.set_rng_state(tensors['rng.torch'])
        if 'rng.cuda' in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors['rng.cuda'])
        self.generator = torch.Generator()
        self.generator.set_state(tensors['rng.sampler'])
        n = state['rng_numpy']
        np.random.set_state((n[0], np.asarray(n[1], np.uint32), *n[2:]))
        p = state['rng_python']
        random.setstate((p[0], tuple(p[1]), p[2]))
        self.start = state['step']
        LOG.info('resumed from %s at step %d (stage %s)', path.resolve().name, self.start,
                 state['stage'])

    @torch.no_grad()
    def _restore_raw_weights(self):
        """A resumed EMA run: the checkpoint's weights are the average, the raw ones go back."""
        if not self._raw_weights:
            raise ValueError('ema_decay: the run to resume was trained without an average; '
                             'resume it with ema_decay 0')
        for name, p in self.model.named_parameters():
            p.copy_(self._raw_weights[name].to(p.device))
        self.ema.updates = self._ema_updates
