"""Scripted-expert demonstrations generated in process (no ROS), written as a dataset.

    python -m dial_ros.data.sim_demos --out work/ds --demos 200 --noise-std 0.03

The fast path for iterating on data and training recipes: the embedded sim and the
closed-loop expert step in one process (about 2.5 s an episode instead of 5.3 s through the
launch and the recorder) and the frames go straight into the LeRobot writer that
``convert`` uses. Frame k is the camera image and joint readings before step k; action k is
the expert's clean target computed from them (with ``--noise-std`` the robot executes the
target plus DART noise, see ``sim.expert.CommandNoise``). Only successful episodes are kept
(the lift held for 1 s). Seeds run from ``--seed`` upwards; the dataset records them. The
recorded pipeline (``record_demos`` + ``convert``) remains the reference one.
"""
import argparse
import json
import logging
import sys
import time

import numpy as np

from dial_ros.data.align import Frames
from dial_ros.data.lerobot import LeRobotWriter
from dial_ros.data.video import pick_codec

LOG = logging.getLogger('dial_ros.sim_demos')
INSTRUCTION = 'pick up the cube and lift it'   # the launch's (config/humanoid.yaml intent)
FPS = 20.0   # GR1Sim's default control rate: one frame per control step


def expert_episode(sim, expert, seed, task=None, noise=None):
    """(success, images, states, labels) of one expert episode from ``sim.reset(seed)``."""
    obs = sim.reset(seed=seed, task=task)
    expert.reset(obs)
    return follow_expert(sim, expert, obs, seed, noise)


def follow_expert(sim, expert, obs, seed, noise=None):
    """Run a started ``expert`` from ``obs`` to its end: (success, images, states, labels)."""
    from dial_ros.sim.expert import SUCCESS_HOLD_S
    if noise is not None:
        noise.reset(seed + 7_919)
    images, states, labels = [], [], []
    extra = int(np.ceil(SUCCESS_HOLD_S / sim.control_dt)) + 1
    while not expert.done or extra > 0:
        extra -= expert.done
        label = expert.act(obs)
        images.append(obs['image'])
        states.append(obs['joint_positions'])
        labels.append(label)
        obs = sim.step(label if noise is None else noise(label, expert.phase))
        if expert.done and sim.held_success():
            break
    return sim.held_success(), images, np.array(states), np.array(labels)


def clutter_task(seed, max_distractors, base=None):
    """TaskSpec overrides of one cluttered training episode, drawn from ``seed``.

    0..``max_distractors`` other blocks in random colours. Hues within 40 degrees of red are
    left out: the task's cube is the red one, so a red distractor would make it ambiguous.
    Generic scene randomisation for robustness, not any evaluation split's palette.
    """
    import colorsys
    task = dict(base or {})
    if max_distractors <= 0:
        return task
    rng = np.random.default_rng([seed, 6_151])
    count = int(rng.integers(0, max_distractors + 1))
    colours = []
    for _ in range(max(count, 1)):
        hue = rng.uniform(40.0, 320.0) / 360.0
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0))
        colours.append((*(round(c, 3) for c in rgb), 1.0))
    task.update(n_distractors=count, distractor_rgba=tuple(colours))
    return task


def write_episode(writer, images, states, labels, instruction, source, tags=None):
    """Append one successful episode of per-step images, joint readings and clean labels."""
    n = len(images)
    frames = Frames(np.arange(n), np.arange(n) / FPS, np.asarray(states), np.ones(n, bool),
                    np.asarray(labels), np.ones(n, bool), np.zeros((n, 18)), np.zeros(n, bool),
                    source, [])
    return writer.add_episode(frames, images, instruction,
                              {'outcome': 'success', 'source': source, 'task': 'lift',
                               **(tags or {})})


_WORKER = {}


def _init_worker(noise_args):
    import dial_ros.sim  # noqa: F401 - headless GL backend before mujoco
    from dial_ros.sim.expert import CommandNoise, ScriptedExpert
    from dial_ros.sim.gr1_env import GR1Sim
    sim = GR1Sim()
    _WORKER.update(sim=sim, expert=ScriptedExpert(sim),
                   noise=CommandNoise(sim, **noise_args) if noise_args['std'] else None)


def _run_episode(job):
    seed, task = job
    w = _WORKER
    return (seed, task) + expert_episode(w['sim'], w['expert'], seed, task, w['noise'])


def imap_workers(init, init_args, run, jobs, workers, state):
    """Yield ``run(job)`` for each job, in order: here (``workers`` <= 1) or in that many
    spawned processes, each set up once by ``init(*init_args)``, which puts its sim in
    ``state['sim']`` (closed here when run in this process)."""
    if workers <= 1:
        init(*init_args)
        try:
            yield from map(run, jobs)
        finally:
            state.pop('sim').close()
        return
    import multiprocessing
    ctx = multiprocessing.get_context('spawn')   # no GL context or mujoco state forked
    with ctx.Pool(workers, init, init_args) as pool:
        yield from pool.imap(run, jobs, chunksize=1)


def _episodes(jobs, noise_args, workers):
    """Yield (seed, task, success, images, states, labels) of (seed, task) jobs, in order."""
    return imap_workers(_init_worker, (noise_args,), _run_episode, jobs, workers, _WORKER)


def generate(out, demos, seed=0, noise_std=0.0, noise_time_s=0.3, grasp_scale=0.3,
             task=None, vcodec=None, instruction=INSTRUCTION, max_episodes=None,
             noise_random=False, clutter=0, workers=1):
    """Write ``demos`` successful episodes into a new dataset at ``out``; returns a summary.

    ``clutter`` > 0 adds 0..clutter randomly coloured distractors per episode
    (:func:`clutter_task`); ``workers`` > 1 runs the episodes in that many processes (the
    frames are written here, in seed order, so the dataset does not depend on it).
    """
    import itertools
    from dial_ros.embodiment import load_embodiment
    spec = load_embodiment('gr1_sim')
    codec = pick_codec(vcodec)
    options = {'source': 'dial_ros.data.sim_demos', 'noise_std': noise_std,
               'noise_random': noise_random,
               'noise_time_s': noise_time_s, 'grasp_scale': grasp_scale, 'task': task or {},
               'clutter': clutter, 'first_seed': seed}
    writer = LeRobotWriter(out, spec, FPS, 224, codec, extra_info=options)
    noise_args = {'std': noise_std, 'time_constant_s': noise_time_s,
                  'grasp_scale': grasp_scale, 'random_std': noise_random}
    seeds = itertools.count(seed) if max_episodes is None else range(seed, seed + max_episodes)
    jobs = ((s, clutter_task(s, clutter, task)) for s in seeds)
    tic, kept, tried, kept_seeds = time.monotonic(), 0, 0, []
    episodes = _episodes(jobs, noise_args, workers)
    try:
        for ep_seed, ep_task, ok, images, states, labels in episodes:
            tried += 1
            if not ok:
                LOG.info('seed %d: failed, skipped', ep_seed)
                continue
            write_episode(writer, images, states, labels, instruction, 'teleop',
                          {'seed': ep_seed, 'distractors': ep_task.get('n_distractors', 0)})
            kept += 1
            kept_seeds.append(ep_seed)
            if kept % 10 == 0:
                LOG.info('%d/%d demos (%d episodes, %.0f s)', kept, demos, tried,
                         time.monotonic() - tic)
            if kept >= demos:
                break
    finally:
        episodes.close()
    writer.extra_info['seeds'] = kept_seeds
    writer.close()
    return {'out': str(out), 'demos': kept, 'episodes': tried,
            'expert_success_rate': kept / max(tried, 1),
            'seconds': round(time.monotonic() - tic, 1)}


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', required=True, help='dataset folder to create')
    p.add_argument('--demos', type=int, required=True, help='successful episodes wanted')
    p.add_argument('--seed', type=int, default=0, help='seed of the first episode')
    p.add_argument('--noise-std', type=float, default=0.0, help='DART noise (rad)')
    p.add_argument('--noise-time', type=float, default=0.3, help='its correlation time (s)')
    p.add_argument('--grasp-scale', type=float, default=0.3,
                   help='noise scale while grasping and lifting')
    p.add_argument('--noise-random', action='store_true',
                   help='each episode draws its noise level uniformly in [0, --noise-std]')
    p.add_argument('--task', default='{}', help='JSON TaskSpec overrides')
    p.add_argument('--vcodec', default=None, help='video codec (default: lossless)')
    p.add_argument('--clutter', type=int, default=0,
                   help='up to this many randomly coloured distractors per episode')
    p.add_argument('--workers', type=int, default=1, help='episode processes')
    args = p.parse_args(argv)
    if not 1 <= args.demos <= 100000:
        LOG.error('--demos: %d is not in 1..100000', args.demos)
        return 2
    if args.workers < 1 or args.clutter < 0:
        LOG.error('--workers must be >= 1 and --clutter >= 0 (got %d, %d)', args.workers,
                  args.clutter)
        return 2
    summary = generate(args.out, args.demos, args.seed, args.noise_std, args.noise_time,
                       args.grasp_scale, json.loads(args.task), args.vcodec,
                       noise_random=args.noise_random, clutter=args.clutter,
                       workers=args.workers)
    print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
