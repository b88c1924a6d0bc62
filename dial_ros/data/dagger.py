"""One DAgger round in the embedded sim: the policy drives, the expert takes over, both kept.

    python -m dial_ros.data.dagger --checkpoint CKPT --base work/lift/dataset \\
        --out work/dagger --rollouts 200 --seed 40000 --workers 2

Each rollout resets the sim, lets the policy (``evaluate.closed_loop``: the controller's
chunk scheduling, safety and stack timing) drive for a random time in ``--takeover-s``, then
hands the robot to the scripted expert as it is (``ScriptedExpert.take_over`` picks the
phase from the measured state: reach, descend, squeeze, lift or back off and retry). The
expert's part is recorded with its clean labels (and DART noise on what is executed, as the
base demonstrations have), tagged ``source: intervention``: demonstrations that start where
this policy's own errors lead, which the expert's demonstrations never visit (HG-DAgger,
Kelly et al. 2019, with the expert as the human). The policy's part is not recorded: it has
no expert label, and its future frames show the policy's intent, not the expert's.
Rollouts the policy finishes before the takeover, and takeovers the expert fails, are
counted and dropped.

``--base`` copies a dataset's episodes first, so ``--out`` is the aggregate to train on
(``python -m dial_ros.train --dataset OUT ...``); tags and order are kept, the base
episodes first.
"""
import argparse
import json
import logging
import pathlib
import sys
import time

import numpy as np

from dial_ros.data.interventions import check_weight
from dial_ros.data.sim_demos import (FPS, INSTRUCTION, follow_expert, imap_workers,
                                     write_episode)

LOG = logging.getLogger('dial_ros.dagger')
_WORKER = {}


def _init_worker(checkpoint, noise_args):
    import torch
    torch.set_num_threads(1)
    import dial_ros.sim  # noqa: F401 - headless GL backend before mujoco
    from dial_ros.evaluate.closed_loop import ClosedLoop
    from dial_ros.model.default import load_model
    from dial_ros.model.policy import DialPolicy
    from dial_ros.sim.expert import CommandNoise, ScriptedExpert
    from dial_ros.sim.gr1_env import GR1Sim
    model, _ = load_model(checkpoint)
    sim = GR1Sim()
    _WORKER.update(sim=sim, loop=ClosedLoop(sim, DialPolicy(model)),
                   expert=ScriptedExpert(sim),
                   noise=CommandNoise(sim, **noise_args) if noise_args['std'] else None)


def rollout(sim, loop, expert, seed, takeover_s, noise=None, task=None):
    """One rollout: a dict with the outcome, and the expert part when it succeeded."""
    loop.timeout_s = takeover_s
    policy = loop.run('dagger', 0, seed, task)
    out = {'seed': seed, 'takeover_s': takeover_s, 'policy_success': policy.success,
           'policy_progress': policy.progress}
    if policy.success:
        return out
    obs = sim.observe()
    expert.take_over(obs)
    phase = expert.phase
    ok, images, states, labels = follow_expert(sim, expert, obs, seed, noise)
    out.update(first_phase=phase, expert_success=ok, retries=expert.retries, steps=len(images))
    if ok:
        out.update(images=images, states=states, labels=labels)
    return out


def _run(job):
    seed, takeover_s = job
    w = _WORKER
    return rollout(w['sim'], w['loop'], w['expert'], seed, takeover_s, w['noise'])


def _rollouts(jobs, checkpoint, noise_args, workers):
    return imap_workers(_init_worker, (checkpoint, noise_args), _run, jobs, workers, _WORKER)


def copy_dataset(writer, base, count=0):
    """Append the first ``count`` episodes (0: all) of the dataset at ``base`` to ``writer``;
    returns how many were copied."""
    import pyarrow.parquet as pq
    from dial_ros.data.align import Frames
    from dial_ros.data.dataset import DialDataset
    from dial_ros.data.lerobot import TAG_COLUMNS, TAGS
    ds = DialDataset(base)
    if count:
        if count > len(ds.episodes):
            raise ValueError(f'base_episodes: {count} requested, {base} has '
                             f'{len(ds.episodes)}')
        ds = DialDataset(base, episodes=set(sorted(ds.episodes)[:count]))
    rows = {}
    for path in sorted((ds.root / 'meta' / 'episodes').rglob('*.parquet')):
        table = pq.read_table(path).to_pydict()
        for i, index in enumerate(table['episode_index']):
            rows[index] = {tag: table[TAG_COLUMNS.get(tag, tag)][i] for tag in TAGS
                           if TAG_COLUMNS.get(tag, tag) in table}
            if table.get('weight'):   # an earlier round's intervention weight stays
                rows[index]['weight'] = table['weight'][i]
    for index, e in sorted(ds.episodes.items()):
        span = slice(e.start, e.start + e.length)
        frames = Frames(np.arange(e.length), np.arange(e.length) / ds.fps, ds.state[span],
                        ds.has_state[span], ds.action[span], ds.has_action[span],
                        ds.eef[span], ds.has_eef[span], rows[index].get('source', 'teleop'), [])
        images = [ds.image(index, t) for t in range(e.length)]
        writer.add_episode(frames, images, ds.tasks[int(ds.task_index[e.start])],
                           {**rows[index], 'base_episode': index})
    return len(ds.episodes)


def generate(checkpoint, out, rollouts, seed=40000, takeover_s=(1.0, 8.0), base=None,
             noise_std=0.05, noise_random=True, workers=1, vcodec=None, base_episodes=0,
             intervention_weight=1.0):
    """Run ``rollouts`` policy rollouts with expert takeovers into a new dataset at ``out``."""
    from dial_ros.data.lerobot import LeRobotWriter
    from dial_ros.data.video import pick_codec
    from dial_ros.embodiment import load_embodiment
    low, high = takeover_s
    intervention_weight = check_weight(intervention_weight)
    if not 0.0 < low <= high:
        raise ValueError(f'takeover_s: {takeover_s} must satisfy 0 < low <= high')
    if pathlib.Path(out).exists():
        raise ValueError(f'out: {out} exists (a DAgger round writes a new dataset)')
    options = {'source': 'dial_ros.data.dagger', 'checkpoint': str(checkpoint),
               'base': str(base or ''), 'base_episodes': base_episodes,
               'takeover_s': [low, high], 'noise_std': noise_std, 'noise_random': noise_random,
               'first_seed': seed, 'intervention_weight': intervention_weight}
    writer = LeRobotWriter(out, load_embodiment('gr1_sim'), FPS, 224, pick_codec(vcodec),
                           extra_info=options)
    tic = time.monotonic()
    copied = copy_dataset(writer, base, base_episodes) if base else 0
    LOG.info('copied %d base episodes (%.0f s)', copied, time.monotonic() - tic)
    rng = np.random.default_rng(seed)
    jobs = [(seed + i, round(float(rng.uniform(low, high)), 2)) for i in range(rollouts)]
    noise_args = {'std': noise_std, 'random_std': noise_random}
    log, kept = [], 0
    results = _rollouts(jobs, checkpoint, noise_args, workers)
    try:
        for result in results:
            images = result.pop('images', None)
            if images is not None:
                write_episode(writer, images, result.pop('states'), result.pop('labels'),
                              INSTRUCTION, 'intervention',
                              {'seed': result['seed'], 'takeover_s': result['takeover_s'],
                               'first_phase': result['first_phase'],
                               'weight': intervention_weight})
                kept += 1
            log.append(result)
            LOG.info('seed %d takeover %.2f s: %s', result['seed'], result['takeover_s'],
                     'policy succeeded first' if result['policy_success'] else
                     f'expert from {result["first_phase"]}: '
                     f'{"success" if result["expert_success"] else "failure"}')
    finally:
        results.close()
    writer.extra_info['rollouts'] = log
    writer.close()
    taken = [r for r in log if not r['policy_success']]
    phases = {}
    for r in taken:
        phases[r['first_phase']] = phases.get(r['first_phase'], 0) + 1
    return {'out': str(out), 'base_episodes': copied, 'rollouts': len(log),
            'policy_succeeded_first': len(log) - len(taken), 'takeovers': len(taken),
            'expert_successes': kept, 'first_phases': phases,
            'seconds': round(time.monotonic() - tic, 1)}


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='', help='policy checkpoint ("" = the bundled one)')
    p.add_argument('--out', required=True, help='dataset folder to create')
    p.add_argument('--rollouts', type=int, required=True, help='policy rollouts to run')
    p.add_argument('--seed', type=int, default=40000, help='seed of the first rollout')
    p.add_argument('--takeover-s', type=float, nargs=2, default=(1.0, 8.0),
                   metavar=('LOW', 'HIGH'), help='the expert takes over after U(LOW, HIGH) s')
    p.add_argument('--base', default='', help='dataset whose episodes are copied in first')
    p.add_argument('--base-episodes', type=int, default=0,
                   help='copy only the first N base episodes (0: all), e.g. the demos the '
                   'policy was trained on')
    p.add_argument('--noise-std', type=float, default=0.05, help='DART noise (rad)')
    p.add_argument('--no-noise-random', action='store_true',
                   help='every rollout at --noise-std (default: a level drawn in [0, it])')
    p.add_argument('--workers', type=int, default=1, help='rollout processes')
    p.add_argument('--intervention-weight', type=float, default=1.0,
                   help='sampling weight in training of the takeover episodes (base: 1)')
    p.add_argument('--vcodec', default=None, help='video codec (default: lossless)')
    args = p.parse_args(argv)
    if not 1 <= args.rollouts <= 100000 or args.workers < 1:
        LOG.error('--rollouts must be in 1..100000 and --workers >= 1 (got %d, %d)',
                  args.rollouts, args.workers)
        return 2
    try:
        summary = generate(args.checkpoint, args.out, args.rollouts, args.seed,
                           tuple(args.takeover_s), args.base or None, args.noise_std,
                           not args.no_noise_random, args.workers, args.vcodec,
                           args.base_episodes, args.intervention_weight)
    except ValueError as err:
        LOG.error('%s', err)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
