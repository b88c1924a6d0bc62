"""Record N successful scripted-expert demonstrations through the humanoid launch.

    python -m dial_ros.data.record_demos --out demos/lift --demos 200

The launch runs the sim, the scripted expert (the teleoperation source) and the recorder
(one rosbag2 per episode, tagged with its outcome and seed), as
``scripts/run.sh driver:=expert record:=true`` does, until ``--out`` holds ``--demos``
successful episodes. ``--noise-std`` records DART demonstrations: the robot executes the
expert's target plus noise, the bag keeps the clean target (/expert/action_label).
Resumable: episodes already in ``--out`` count, and new episodes use the seeds after the
highest one recorded, so a rerun continues instead of repeating.
Episodes cut by the stop are tagged ``unknown`` by the recorder; convert skips them with
``--skip-outcomes fail,discard,unknown``.
"""
import argparse
import json
import logging
import pathlib
import signal
import sys
import time

from dial_ros import procs
from dial_ros.data.bag import read_tags
from dial_ros.launch_runner.child import start_launch, stop_launch, write_params

LOG = logging.getLogger('dial_ros.record_demos')


def recorded(out):
    """(successful episodes, next seed) of the episode folders in ``out``."""
    successes, seeds = 0, []
    for folder in sorted(pathlib.Path(out).glob('episode_*')):
        tags = read_tags(folder)
        successes += tags.get('outcome') == 'success'
        if tags.get('seed', '').isdigit():
            seeds.append(int(tags['seed']))
    return successes, max(seeds) + 1 if seeds else 0


def record(out, demos, task_preset='default', timeout_s=3600.0, domain=None, expert=None):
    """Record until ``out`` holds ``demos`` successes; returns the number it holds.

    ``expert``: expert node parameters, e.g. {'noise_std': 0.03} for DART recordings.
    """
    out = pathlib.Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    have, seed = recorded(out)
    if have >= demos:
        LOG.info('%s already holds %d successful demos', out, have)
        return have
    # the sim resets once at start-up, then the expert resets it for each episode
    params = write_params(out / '.record_params.yaml',
                          {'sim': {'seed': max(seed - 1, 0), 'task_preset': task_preset},
                           'expert': dict(expert or {})})
    domain = domain or procs.new_domain_id('record_demos')
    LOG.info('recording %d more demos into %s (seeds from %d, domain %d)', demos - have, out,
             seed, domain)
    proc = start_launch(['driver:=expert', 'record:=true', f'record_dir:={out}',
                         f'config:={params}', 'foresight_view:=false'],
                        out / '.record_launch.log', domain)
    deadline, count = time.monotonic() + timeout_s, have
    try:
        while count < demos:
            if proc.poll() is not None:
                raise RuntimeError(f'the launch exited ({proc.returncode}); see '
                                   f'{out / ".record_launch.log"}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'{count}/{demos} demos after {timeout_s:.0f} s')
            time.sleep(2.0)
            new, _ = recorded(out)
            if new != count:
                count = new
                LOG.info('%d/%d successful demos', count, demos)
    finally:
        stop_launch(proc)
    return recorded(out)[0]


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', required=True, help='folder of the episode bags')
    p.add_argument('--demos', type=int, required=True, help='successful episodes wanted')
    p.add_argument('--task-preset', default='default', help="the sim's task_preset")
    p.add_argument('--timeout', type=float, default=3600.0, help='give up after this (s)')
    p.add_argument('--noise-std', type=float, default=0.0, help="DART noise on the executed "
                   "command (rad; the expert node's noise_std, 0 = none)")
    p.add_argument('--noise-time', type=float, default=0.3, help='its correlation time (s)')
    p.add_argument('--grasp-scale', type=float, default=0.3,
                   help='noise scale while grasping and lifting')
    p.add_argument('--noise-random', action='store_true',
                   help='each episode draws its noise level uniformly in [0, --noise-std]')
    args = p.parse_args(argv)
    if not 1 <= args.demos <= 100000:
        LOG.error('--demos: %d is not in 1..100000', args.demos)
        return 2
    # SIGTERM (a scheduler, kill) stops the launch too instead of orphaning its nodes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        expert = {'noise_std': args.noise_std, 'noise_time_s': args.noise_time,
                  'noise_grasp_scale': args.grasp_scale, 'noise_random': args.noise_random}
        count = record(args.out, args.demos, args.task_preset, args.timeout, expert=expert)
    except (RuntimeError, TimeoutError) as err:
        LOG.error('%s', err)
        return 1
    print(json.dumps({'out': str(args.out), 'successful_demos': count}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
