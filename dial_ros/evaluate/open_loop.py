"""Open-loop diagnostics on held-out expert episodes: where does the error come from?

    python -m dial_ros.evaluate.open_loop --checkpoint CKPT --dataset work/val --windows 10

On frames of expert episodes the model never saw, it measures
* System-2: L_world of the foresight (MSE to the ViT tokens of frame t+H) against the trivial
  prediction "the future frame looks like the current one" (with an L_world head copy, the
  copy's prediction; ``l_world_intent`` is then the action path's latent, no longer trained
  to be the future frame);
* System-1: the mean absolute error (rad) of the chunk against the expert's next H targets on
  the waist and right arm, when System-1 is conditioned on the ground-truth future tokens,
  on System-2's foresight, on a copy of the current tokens, and on zeros.
If the chunk is good with the ground truth and with the foresight, the model is not the
problem on the expert's own states, and closed-loop failures come from drift.

The averages hide the moment that decides the reach: the first frame, where every episode
starts from the same pose and only the image tells where the cube is. ``start_slope_*`` is
the pooled slope of the chunk's last waypoint on the expert's (waist and right arm, each
joint centred over the episodes) at frame 0: 1 when the plan follows the cube as the
expert's does, 0 when the policy plays the average reach whatever it sees.
"""
import argparse
import json
import logging
import pathlib
import sys

import numpy as np

LOG = logging.getLogger('dial_ros.evaluate.open_loop')
ARM_AND_WAIST = ('right_arm', 'waist')


def diagnose(policy, dataset, windows=10, seed=0):
    """Metrics dict over ``windows`` evenly spaced frames of every dataset episode."""
    spec = policy.embodiment
    cols = [list(spec.joint_names).index(j) for g in spec.action_groups
            if g.name in ARM_AND_WAIST for j in g.joints]
    world, intent_world, copy = [], [], []
    errors = {k: [] for k in ('ground_truth', 'foresight', 'copy', 'zeros')}
    horizon = policy.horizon
    for e in dataset.episodes.values():
        ts = np.linspace(0, e.length - 1, windows).astype(int)
        for k, t in enumerate(ts):
            future_t = min(t + dataset.future_offset, e.length - 1)
            obs = policy.encode_frame(dataset.image(e.index, t))
            future = policy.encode_frame(dataset.image(e.index, future_t))
            task = dataset.tasks[int(dataset.task_index[e.start + t])]
            intent = policy.foresee(obs, task)
            world.append(float(np.mean((policy.predict_future(obs, task) - future) ** 2)))
            intent_world.append(float(np.mean((intent - future) ** 2)))
            copy.append(float(np.mean((obs - future) ** 2)))
            q = dataset.state[e.start + t].astype(np.float64)
            rows = e.start + np.minimum(t + np.arange(horizon), e.length - 1)
            target = dataset.action[rows][:, cols]
            conditions = {'ground_truth': future, 'foresight': intent, 'copy': obs,
                          'zeros': np.zeros_like(obs)}
            for name, condition in conditions.items():
                chunk = policy.act(obs, condition, q, seed=seed + k)
                errors[name].append(float(np.mean(np.abs(chunk[:, cols] - target))))
    out = {'windows': len(world), 'l_world_foresight': float(np.mean(world)),
           'l_world_intent': float(np.mean(intent_world)),
           'l_world_copy_current': float(np.mean(copy))}
    out.update({f'action_mae_{k}': float(np.mean(v)) for k, v in errors.items()})
    out.update(start_slopes(policy, dataset, cols))
    return out


def pooled_slope(expert, predicted):
    """Slope of ``predicted`` on ``expert`` ((episodes, joints)), each joint centred."""
    g = expert - expert.mean(0)
    p = predicted - predicted.mean(0)
    return float(np.sum(g * p) / max(np.sum(g * g), 1e-12))


def start_slopes(policy, dataset, cols, seeds=4):
    """Frame-0 image dependence: {start_slope_foresight, start_slope_ground_truth}."""
    horizon = policy.horizon
    expert, by = [], {'foresight': [], 'ground_truth': []}
    for e in dataset.episodes.values():
        obs = policy.encode_frame(dataset.image(e.index, 0))
        future = policy.encode_frame(dataset.image(
            e.index, min(dataset.future_offset, e.length - 1)))
        intent = policy.foresee(obs, dataset.tasks[int(dataset.task_index[e.start])])
        q = dataset.state[e.start].astype(np.float64)
        expert.append(dataset.action[e.start + min(horizon - 1, e.length - 1)][cols])
        for name, condition in (('foresight', intent), ('ground_truth', future)):
            chunks = [policy.act(obs, condition, q, seed=s) for s in range(seeds)]
            by[name].append(np.mean(chunks, axis=0)[-1, cols])
    expert = np.array(expert)
    return {f'start_slope_{k}': pooled_slope(expert, np.array(v)) for k, v in by.items()}


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='', help='checkpoint ("" = the bundled one)')
    p.add_argument('--dataset', required=True, help='held-out LeRobot dataset')
    p.add_argument('--windows', type=int, default=10, help='frames per episode')
    p.add_argument('--json', default='', help='also write the metrics here')
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from dial_ros.data.dataset import DialDataset
    from dial_ros.model.default import load_model
    from dial_ros.model.policy import DialPolicy
    try:
        model, _ = load_model(args.checkpoint)
        policy = DialPolicy(model)
        dataset = DialDataset(args.dataset, horizon=policy.horizon,
                              future_offset=model.config.foresight_horizon)
    except (OSError, ValueError) as err:
        LOG.error('%s', err)
        return 2
    metrics = diagnose(policy, dataset, args.windows)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(metrics, indent=2) + '\n')
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
