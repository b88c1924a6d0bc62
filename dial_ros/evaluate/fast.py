"""Fast closed-loop evaluation of a checkpoint in one process (no ROS): for iteration.

    python -m dial_ros.evaluate.fast --checkpoint CKPT --episodes 50 [--split seen]
    python -m dial_ros.evaluate.fast --checkpoint CKPT --mode sync --replan-steps 2

Same splits, seeds and success rule as ``python -m dial_ros.evaluate`` and the controller's
chunk scheduling, safety and timing (``closed_loop``); writes OUT/episodes.jsonl,
OUT/results.json (per split: the success statistics plus the reach slopes and closest
approach, see ``reach``) and OUT/results.md. ``--workers 2`` splits the episodes over two
processes. The numbers to report come from the ROS evaluation; this one is for choosing.
"""
import argparse
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import pathlib
import sys
import time

from dial_ros import paths
from dial_ros.evaluate.metrics import markdown_table, summarize
from dial_ros.evaluate.reach import reach_summary
from dial_ros.evaluate.splits import load_splits

LOG = logging.getLogger('dial_ros.evaluate.fast')
ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_SPLITS = paths.config_file('eval_splits.yaml')
_WORKER = {}


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='', help='checkpoint folder ("" = the bundled one)')
    p.add_argument('--episodes', type=int, default=20, help='episodes per split')
    p.add_argument('--first-episode', type=int, default=0, help='index of the first episode')
    p.add_argument('--splits', default=str(DEFAULT_SPLITS), help='splits YAML file')
    p.add_argument('--split', action='append', help='only this split (repeatable)')
    p.add_argument('--seed-base', type=int, default=None, help="replace the splits file's "
                   'seed_base (e.g. validation seeds that no reported number uses)')
    p.add_argument('--mode', default='ros', choices=('ros', 'sync'),
                   help="ros: the stack's clocks; sync: a chunk every --replan-steps steps")
    p.add_argument('--replan-steps', type=int, default=2, help='sync mode: steps per chunk')
    p.add_argument('--params', default='', help='controller parameter file (default: '
                   'config/humanoid.yaml)')
    p.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                   help='override a controller setting, e.g. intent_rate_hz=20')
    p.add_argument('--workers', type=int, default=1, help='processes')
    p.add_argument('--out', default='', help='results folder (default evals/fast/<label>)')
    p.add_argument('--label', default='', help='method name (default: checkpoint folder)')
    return p


def _settings(args):
    from dial_ros.evaluate.closed_loop import PARAMS_FILE, ControllerSettings
    settings = ControllerSettings.from_params_file(args.params or PARAMS_FILE)
    types = {f.name: f.type for f in dataclasses.fields(settings)}
    for item in args.set:
        name, _, value = item.partition('=')
        if name not in types:
            raise ValueError(f'--set: unknown setting {name!r} (known: {sorted(types)})')
        setattr(settings, name, value if types[name] == 'str' else float(value))
    return settings


def _init_worker(checkpoint, settings, mode, replan_steps, timeout):
    import torch
    torch.set_num_threads(1)
    import dial_ros.sim  # noqa: F401 - headless GL backend before mujoco
    from dial_ros.evaluate.closed_loop import ClosedLoop
    from dial_ros.model.default import load_model
    from dial_ros.model.policy import DialPolicy
    from dial_ros.sim.gr1_env import GR1Sim
    model, model_id = load_model(checkpoint)
    sim = GR1Sim()
    _WORKER['loop'] = ClosedLoop(sim, DialPolicy(model), settings, mode=mode,
                                 replan_steps=replan_steps, timeout_s=timeout)
    _WORKER['model_id'] = model_id


def _run(job):
    split, episode, seed, task = job
    result = _WORKER['loop'].run(split, episode, seed, task)
    return dataclasses.asdict(result)


def evaluate(args):
    """Run the evaluation; returns the results dict (also written to OUT)."""
    if not 1 <= args.episodes <= 100000:
        raise ValueError(f'--episodes: {args.episodes} is not in 1..100000')
    if not 1 <= args.workers <= 64:
        raise ValueError(f'--workers: {args.workers} is not in 1..64')
    plan = load_splits(args.splits, args.split, args.seed_base)
    settings = _settings(args)
    label = args.label or (pathlib.Path(args.checkpoint).name if args.checkpoint else 'bundled')
    out = pathlib.Path(args.out or ROOT / 'evals' / 'fast' / label)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(s.name, e, s.seed(e), s.task) for s in plan.splits
            for e in range(args.first_episode, args.first_episode + args.episodes)]
    init = (args.checkpoint, settings, args.mode, args.replan_steps, plan.episode_timeout_s)
    log_path = out / 'episodes.jsonl'
    log_path.write_text('')
    episodes, tic = [], time.monotonic()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    context = multiprocessing.get_context('spawn')  # a fresh GL context per worker
    with concurrent.futures.ProcessPoolExecutor(args.workers, context, _init_worker,
                                                init) as pool:
        for result in pool.map(_run, jobs):
            episodes.append(result)
            with open(log_path, 'a') as f:
                f.write(json.dumps(result) + '\n')
            LOG.info('%s #%d seed %d: %s, progress %.2f, closest %.1f cm (%.1f s)',
                     result['split'], result['episode'], result['seed'],
                     'success' if result['success'] else 'failure', result['progress'],
                     result['closest_cm'], result['wall_s'])
    rows = []
    for s in plan.splits:
        mine = [e for e in episodes if e['split'] == s.name]
        rows.append({'label': label, **summarize(s.name, mine), **reach_summary(mine)})
    results = {'label': label, 'checkpoint': args.checkpoint or 'bundled', 'mode': args.mode,
               'replan_steps': args.replan_steps, 'settings': dataclasses.asdict(settings),
               'splits_file': plan.source, 'wall_s': round(time.monotonic() - tic, 1),
               'splits': rows}
    (out / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
    (out / 'results.md').write_text(markdown_table(rows) + reach_table(rows))
    return results


def reach_table(rows):
    """Reach slopes and closest approach per split, as Markdown."""
    lines = ['', '| split | slope x | slope y | closest cm (median) | within 6 cm % |',
             '|---|---|---|---|---|']
    lines += [f'| {r["split"]} | {r["slope_x"]:.2f} | {r["slope_y"]:.2f} | '
              f'{r["closest_cm_median"]:.1f} | {100 * r["reached"]:.0f} |' for r in rows]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    args = parser().parse_args(argv)
    try:
        results = evaluate(args)
    except (ValueError, OSError) as err:
        LOG.error('%s', err)
        return 2
    print(markdown_table(results['splits']) + reach_table(results['splits']), end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())
