"""Linear probe of the frozen ViT: how well do its tokens locate the cube?

    python -m dial_ros.evaluate.probe --checkpoint CKPT --frames 600 [--task '{...}']

Renders the head camera at the start pose for ``--frames`` seeds (the cube placed as the
task places it), encodes each frame with the model's frozen vision tower and fits a ridge
regression from the flattened tokens to the cube's table position (x, y) on the first 3/4
of the frames; reports R^2 and the RMSE in mm on the last 1/4. A tower whose features keep
*where* the cube is scores R^2 near 1; one that loses it scores near 0.
"""
import argparse
import json
import logging
import sys

import numpy as np

LOG = logging.getLogger('dial_ros.evaluate.probe')


def ridge_probe(features, targets, alpha=1.0, train_share=0.75):
    """Fit ridge on the first ``train_share`` of rows (features standardised), test on the
    rest: {r2, rmse, r2_per_dim}. ``alpha``: the ridge penalty."""
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    y = np.asarray(targets, np.float64).reshape(len(targets), -1)
    split = int(round(len(x) * train_share))
    if split < 2 or len(x) - split < 2:
        raise ValueError(f'ridge_probe: {len(x)} rows are too few to fit and test')
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-8
    xs = (x - mean) / std
    y_mean = y[:split].mean(0)
    a = xs[:split]
    # the dual form: n x n instead of d x d (d = 64 x D features, n = a few hundred frames)
    coef = a.T @ np.linalg.solve(a @ a.T + alpha * np.eye(split), y[:split] - y_mean)
    pred = xs[split:] @ coef + y_mean
    truth = y[split:]
    resid = np.sum((truth - pred) ** 2, axis=0)
    total = np.sum((truth - truth.mean(0)) ** 2, axis=0)
    r2 = 1.0 - resid / np.maximum(total, 1e-12)
    return {'r2': float(np.mean(r2)), 'r2_per_dim': r2.tolist(),
            'rmse': float(np.sqrt(np.mean((truth - pred) ** 2)))}


def start_frames(sim, seeds, task=None):
    """(images (n, S, S, 3), cube table xy (n, 2)) at the start pose of each seed."""
    images, cubes = [], []
    for seed in seeds:
        obs = sim.reset(seed=int(seed), task=task)
        images.append(obs['image'])
        cubes.append(sim.cube_pose()[0][:2] - sim.table_center)
    return np.stack(images), np.array(cubes)


def probe(model, frames=600, task=None, first_seed=500000, alpha=1.0, batch=32):
    """Probe a DialModel's vision tower on ``frames`` start frames; a metrics dict."""
    import torch
    import dial_ros.sim  # noqa: F401 - headless GL backend before mujoco
    from dial_ros.sim.gr1_env import GR1Sim
    with GR1Sim() as sim:
        images, cubes = start_frames(sim, range(first_seed, first_seed + frames), task)
    with torch.no_grad():
        tokens = np.concatenate([model.system2.encode_images(images[i:i + batch]).float().numpy()
                                 for i in range(0, len(images), batch)])
    out = ridge_probe(tokens, cubes, alpha)
    out.update(frames=frames, rmse_mm=1000.0 * out.pop('rmse'))
    return out


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='', help='checkpoint ("" = the bundled one)')
    p.add_argument('--frames', type=int, default=600)
    p.add_argument('--task', default='{}', help='JSON TaskSpec overrides')
    p.add_argument('--alpha', type=float, default=1.0, help='ridge penalty')
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from dial_ros.model.default import load_model
    if args.frames < 8:
        LOG.error('--frames: %d is too few (>= 8)', args.frames)
        return 2
    model, _ = load_model(args.checkpoint)
    print(json.dumps(probe(model, args.frames, json.loads(args.task), alpha=args.alpha),
                     indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
