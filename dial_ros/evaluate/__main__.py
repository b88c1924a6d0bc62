"""Evaluate a DIAL checkpoint (or the scripted expert) closed loop in the embedded sim.

    python -m dial_ros.evaluate --checkpoint checkpoints/dial_tiny_gr1 --episodes 20
    python -m dial_ros.evaluate --driver expert --episodes 20 --label expert
    python -m dial_ros.evaluate --checkpoint CKPT --split seen --record evals/bags
    python -m dial_ros.evaluate --param controller.chunk_transition=rtc --label rtc

Starts the humanoid launch (sim, perception, intent, controller; or sim and expert) on its
own ROS domain, runs ``--episodes`` per split of ``--splits`` (config/eval_splits.yaml), and
writes OUT/episodes.jsonl (one line per episode, as it happens), OUT/results.json (per
split: split, episodes, success_rate, ci95_low, ci95_high, mean_completion_s,
task_completion, ..., smoothness: the largest command step and the jerk at chunk switches,
see smoothness.py) and OUT/results.md. ``--param node.name=value`` (repeatable) overrides a
parameter of config/humanoid.yaml for the evaluated launch (variants on the same seeds).
``--record DIR`` records every episode with the
recorder (one rosbag2 per episode, tagged success/fail). Merge several runs into one table
with ``python -m dial_ros.evaluate.table OUT1 OUT2 ...``.
"""
import argparse
import json
import logging
import os
import pathlib
import sys
import time

import yaml

from dial_ros import apply_ros_env_defaults, paths, procs
from dial_ros.evaluate.metrics import markdown_table, summarize
from dial_ros.evaluate.smoothness import summarize_smoothness
from dial_ros.evaluate.splits import load_splits
from dial_ros.launch_runner.child import ROOT, start_launch, stop_launch, write_params

LOG = logging.getLogger('dial_ros.evaluate')
DEFAULT_SPLITS = paths.config_file('eval_splits.yaml')


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='', help='DIAL checkpoint folder ("" = the bundled '
                   'one); ignored with --driver expert')
    p.add_argument('--driver', default='policy', choices=('policy', 'expert'))
    p.add_argument('--episodes', type=int, default=20, help='episodes per split')
    p.add_argument('--splits', default=str(DEFAULT_SPLITS), help='splits YAML file')
    p.add_argument('--split', action='append', help='evaluate only this split (repeatable)')
    p.add_argument('--out', default='', help='results folder (default evals/<label>)')
    p.add_argument('--label', default='', help='method name in the tables (default: the '
                   'checkpoint folder name, or expert)')
    p.add_argument('--record', default='', help='record every episode into this folder')
    p.add_argument('--timeout', type=float, default=0.0, help='episode timeout in s '
                   '(default: the splits file)')
    p.add_argument('--settle', type=float, default=1.0, help='seconds between a reset and '
                   'the release of the controller (the pipeline sees the new scene)')
    p.add_argument('--domain-id', type=int, default=0, help='ROS_DOMAIN_ID of the evaluated '
                   'graph (default: a random one in 100-230, so that runs never meet)')
    p.add_argument('--param', action='append', default=[], metavar='NODE.NAME=VALUE',
                   help='override a parameter of config/humanoid.yaml in the evaluated launch '
                   '(repeatable; VALUE in YAML), e.g. controller.chunk_transition=rtc')
    return p


def parse_params(items):
    """``['node.name=value', ...]`` -> ``{node: {name: value}}``, checked against
    config/humanoid.yaml (every declared parameter is there)."""
    known = yaml.safe_load(paths.config_file('humanoid.yaml').read_text())
    out = {}
    for item in items:
        key, sep, text = item.partition('=')
        node, dot, name = key.partition('.')
        if not (sep and dot and node and name):
            raise ValueError(f'--param: expected node.name=value, got {item!r}')
        declared = (known.get(node) or {}).get('ros__parameters') or {}
        if name not in declared:
            raise ValueError(f'--param: {node}.{name} is not a parameter in humanoid.yaml')
        out.setdefault(node, {})[name] = yaml.safe_load(text)
    return out


def check_args(args):
    if not 1 <= args.episodes <= 10000:
        raise ValueError(f'--episodes: {args.episodes} is not in 1..10000')
    if args.timeout and not 1.0 <= args.timeout <= 600.0:
        raise ValueError(f'--timeout: {args.timeout} s is not in 1..600')
    if args.domain_id and not 1 <= args.domain_id <= 232:
        raise ValueError(f'--domain-id: {args.domain_id} is not in 1..232')
    if args.driver == 'policy' and args.checkpoint:
        from dial_ros.model.checkpoint import read_checkpoint_config
        read_checkpoint_config(args.checkpoint)  # names a missing or foreign folder


def checkpoint_info(path):
    """What the tables say about a checkpoint: recipe, demos, steps (from its metadata)."""
    from dial_ros.model.checkpoint import read_checkpoint_config
    from dial_ros.paths import bundled_checkpoint
    folder = pathlib.Path(path) if path else bundled_checkpoint()  # names where it looked
    try:
        meta = read_checkpoint_config(folder)
    except (OSError, ValueError):
        return {'checkpoint': str(folder), 'untrained': True}
    extra = meta.get('extra') or {}
    train = extra.get('train') or {}
    return {'checkpoint': str(folder), 'recipe': meta['model'].get('recipe'),
            'demos': extra.get('demos'), 'steps': extra.get('step'),
            'first_stage_fraction': train.get('first_stage_fraction')}


def launch_config(out, driver, plan, episodes, record, params=None):
    """The launch's parameter file: config/humanoid.yaml plus what this evaluation needs
    and the ``--param`` overrides."""
    first = plan.splits[0]
    # the sim resets once at start-up (one seed), the expert resets it again per episode
    startup = 1 if driver == 'expert' else 0
    overrides = {
        'sim': {'seed': first.seed(0) - startup, 'task': json.dumps(first.task),
                'task_preset': 'default'},
        'recorder': {'source': 'expert' if driver == 'expert' else 'policy', 'task': 'lift'},
    }
    if driver == 'expert':
        # paused until the evaluation listens; the first split's episodes are set already
        overrides['expert'] = {'episodes': episodes, 'autoreset': True, 'paused': True}
    for node, values in (params or {}).items():
        overrides.setdefault(node, {}).update(values)
    return write_params(out / 'launch_params.yaml', overrides)


def launch_arguments(args, params):
    # episodes:=false: this tool drives the episodes itself (no second runner in the launch);
    # foresight_view:=false: nobody watches, no panel node's CPU in the numbers
    arguments = [f'driver:={args.driver}', f'config:={params}', 'episodes:=false',
                 f'record:={"true" if args.record else "false"}', 'foresight_view:=false']
    if args.record:
        arguments.append(f'record_dir:={pathlib.Path(args.record).resolve()}')
    if args.driver == 'policy' and args.checkpoint:
        arguments.append(f'checkpoint:={pathlib.Path(args.checkpoint).resolve()}')
    return arguments


def evaluate(args):
    """Run the evaluation; returns the results dict (also written to OUT)."""
    check_args(args)
    overrides = parse_params(args.param)
    plan = load_splits(args.splits, args.split)
    timeout = args.timeout or plan.episode_timeout_s
    info = {'driver': args.driver} if args.driver == 'expert' else checkpoint_info(
        args.checkpoint)
    label = args.label or ('expert' if args.driver == 'expert'
                           else pathlib.Path(info['checkpoint']).name)
    out = pathlib.Path(args.out or ROOT / 'evals' / label)
    out.mkdir(parents=True, exist_ok=True)
    domain = args.domain_id or procs.new_domain_id('evaluate')
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    apply_ros_env_defaults()
    params = launch_config(out, args.driver, plan, args.episodes, args.record, overrides)
    rate = yaml.safe_load(params.read_text())['controller']['ros__parameters'][
        'control_rate_hz']
    arguments = launch_arguments(args, params)
    LOG.info('launch (domain %d): %s', domain, ' '.join(arguments))
    proc = start_launch(arguments, out / 'launch.log', domain)
    episodes, log_path, tic = [], out / 'episodes.jsonl', time.monotonic()
    log_path.write_text('')

    def keep(result):
        episodes.append(result)
        with open(log_path, 'a') as f:
            f.write(json.dumps(result) + '\n')
        LOG.info('%s #%d seed %d: %s in %.1f s, progress %.2f', result['split'],
                 result['episode'], result['seed'], 'success' if result['success'] else
                 'failure', result['completion_s'] or result['duration_s'], result['progress'])

    from dial_ros.evaluate.episodes import EpisodeRunner
    from dial_ros.evaluate.graph import GraphClient
    client = GraphClient(domain)
    try:
        runner = EpisodeRunner(client, args.driver, timeout, args.settle, bool(args.record),
                               command_rate_hz=float(rate))
        runner.wait_ready()
        for index, split in enumerate(plan.splits):
            if args.driver == 'expert':
                runner.expert_split(split, args.episodes, keep, configured=index == 0)
            else:
                for episode in range(args.episodes):
                    keep(runner.policy_episode(split, episode))
                    if proc.poll() is not None:
                        raise RuntimeError(f'the launch exited ({proc.returncode}); see '
                                           f'{out / "launch.log"}')
    finally:
        client.close()
        stop_launch(proc)
    rows = []
    for s in plan.splits:
        mine = [e for e in episodes if e['split'] == s.name]
        rows.append({'label': label, 'demos': info.get('demos'), **summarize(s.name, mine),
                     **({'smoothness': summarize_smoothness(mine)}
                        if args.driver == 'policy' else {})})
    results = {'label': label, **info, 'params': overrides, 'splits_file': plan.source,
               'episode_timeout_s': timeout, 'wall_s': round(time.monotonic() - tic, 1),
               'splits': rows}
    (out / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
    (out / 'results.md').write_text(markdown_table(rows) + smoothness_table(rows))
    return results


def smoothness_table(rows):
    """The smoothness summary per split as Markdown ('' without one)."""
    rows = [r for r in rows if r.get('smoothness')]
    if not rows:
        return ''

    def num(x, fmt):
        return '-' if x is None else format(x, fmt)
    lines = ['', '| method | split | switches | max step rad | switch jerk max rad/s^3 | '
             'switch jerk p99 (median) rad/s^3 |', '|---|---|---|---|---|---|']
    for r in rows:
        s = r['smoothness']
        lines.append(f'| {r["label"]} | {r["split"]} | {s["switches"]} | '
                     f'{num(s["max_step_rad"], ".4f")} | {num(s["switch_jerk_max"], ".0f")} | '
                     f'{num(s["switch_jerk_p99_median"], ".0f")} |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    args = parser().parse_args(argv)
    try:
        results = evaluate(args)
    except (ValueError, OSError, RuntimeError) as err:  # OSError: a missing checkpoint, timeouts
        LOG.error('%s', err)
        return 2
    print(markdown_table(results['splits']) + smoothness_table(results['splits']), end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())
