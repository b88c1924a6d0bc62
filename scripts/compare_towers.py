"""Compare frozen vision towers on what DIAL needs from them (numbers as JSON lines).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_towers.py --dataset work/ds_clean \\
        --tower random:32x2 --tower effnet_lite0 [--tower random:64x4 --tower FILE ...]

A tower is ``random:HxD`` (the seeded random tower, ViT width H, depth D), a name of
``VLMConfig.tiny_vision_init`` (the shipped tower) or a ``distill_tower`` export file. For
each, on a bare tiny DialModel (gr1_sim embodiment):

- probe: ``dial_ros.evaluate.probe`` on ``--frames`` start frames (same seeds and task):
  ridge from the tokens to the cube's table xy, R^2 and RMSE (mm) on the last quarter;
  ``shuffled``: the same with the targets permuted (chance level);
- probe_augmented: every frame under its own draw of the training augmentation (crop +
  colour jitter), fit and test; probe_jitter_test: fit on clean frames, test on
  colour-jittered ones (no crop), a robustness proxy that stays on the training task
  (also at ridge penalty 1e3); jitter_shift_rel_cube_spread: the mean squared token change
  that the jitter causes over the token variance across cube placements;
- lworld: on ``--episodes`` episodes of the dataset, mean squared difference between the
  tokens of frame t and of frame min(t + 16, T - 1) (the "future = current" L_world
  baseline), relative to the token variance over all tokens and to the variance of each
  token over the frames; cube_spread: the token variance over the probe's start frames;
- encode_ms: ``System2.encode_images`` of one 224 px frame on one thread (median and
  minimum of ``--time-repeats``, the towers interleaved; also the median process CPU time,
  which a busy machine inflates less).
"""
import argparse
import json
import sys
import time

import numpy as np
import torch


def build(spec):
    """A bare tiny DialModel with the tower ``spec``."""
    from dial_ros.embodiment import load_embodiment
    from dial_ros.model import tiny_vlm
    from dial_ros.model.config import VLMConfig, tiny_config
    from dial_ros.model.dial import DialModel
    sizes, path = {}, None
    if spec.startswith('random:'):
        hidden, depth = spec.split(':')[1].split('x')
        sizes = dict(tiny_vision_hidden=int(hidden), tiny_vision_depth=int(depth))
    elif spec in tiny_vlm.TOWER_FILES:
        from safetensors import safe_open
        with safe_open(str(tiny_vlm.tower_file(spec)), framework='pt') as f:
            meta = f.metadata()
        sizes = dict(tiny_vision_hidden=int(meta['vision_hidden']),
                     tiny_vision_depth=int(meta['vision_depth']), tiny_vision_init=spec)
    else:
        from safetensors import safe_open
        path = spec
        with safe_open(path, framework='pt') as f:
            meta = f.metadata()
        sizes = dict(tiny_vision_hidden=int(meta['vision_hidden']),
                     tiny_vision_depth=int(meta['vision_depth']))
    model = DialModel(tiny_config(vlm=VLMConfig(**sizes)), [load_embodiment('gr1_sim')])
    if path:
        tiny_vlm.load_tower(model.system2.adapter.hf, None, path)
    return model.eval()


def encode(model, images, batch=32):
    return np.concatenate([model.system2.encode_images(images[i:i + batch]).float().numpy()
                           for i in range(0, len(images), batch)])


def augmented(images, augment, seed):
    rng = np.random.default_rng(seed)
    return np.stack([augment.apply(im, augment.draw(rng)) for im in images])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dataset', required=True)
    p.add_argument('--tower', action='append', required=True)
    p.add_argument('--frames', type=int, default=600)
    p.add_argument('--episodes', type=int, default=10)
    p.add_argument('--first-seed', type=int, default=500000)
    p.add_argument('--time-repeats', type=int, default=200)
    p.add_argument('--time-only', action='store_true', help='only the encode time')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import dial_ros.sim  # noqa: F401 - headless GL backend before mujoco
    from dial_ros.data.augment import Augment
    from dial_ros.data.dataset import DialDataset
    from dial_ros.evaluate.probe import ridge_probe, start_frames
    from dial_ros.sim.gr1_env import GR1Sim
    with GR1Sim() as sim:
        images, cubes = start_frames(sim, range(args.first_seed, args.first_seed + args.frames))
    aug_images = augmented(images, Augment(), 1)
    jitter_images = augmented(images, Augment(crop_scale=1.0), 2)
    dataset = DialDataset(args.dataset)
    episodes = sorted(dataset.episodes)[::max(1, len(dataset.episodes) // args.episodes)]
    episodes = episodes[:args.episodes]
    clips = [np.stack([dataset.image(e, t) for t in range(dataset.episodes[e].length)])
             for e in episodes]
    split = int(round(0.75 * len(images)))
    shuffled = cubes[np.random.default_rng(0).permutation(len(cubes))]

    models = {}

    def mm(r):
        return {'r2': round(r['r2'], 4), 'rmse_mm': round(1000 * r['rmse'], 2)}
    for spec in args.tower:
        model = build(spec)
        if args.time_only:
            models[spec] = model
            continue
        with torch.no_grad():
            tokens = encode(model, images)
            row = {'tower': spec, 'token_std': round(float(tokens.std()), 4),
                   'token_mean_abs': round(float(np.abs(tokens.mean((0, 1))).mean()), 4),
                   'probe': mm(ridge_probe(tokens, cubes)),
                   'shuffled': mm(ridge_probe(tokens, shuffled))}
            row['probe_augmented'] = mm(ridge_probe(encode(model, aug_images), cubes))
            jitter = encode(model, jitter_images)
            mixed = np.concatenate([tokens[:split], jitter[split:]])
            row['probe_jitter_test'] = mm(ridge_probe(mixed, cubes))
            row['probe_jitter_test_alpha1e3'] = mm(ridge_probe(mixed, cubes, alpha=1e3))
            # how far colour jitter moves the tokens, in units of how far the cube moves them
            row['jitter_shift_rel_cube_spread'] = round(
                float(((jitter - tokens) ** 2).mean() / tokens.var(0).mean()), 2)
            row['cube_spread'] = round(float(tokens.var(0).mean()), 5)
            diffs, total, per_token = [], [], []
            for clip in clips:
                tok = encode(model, clip)
                future = tok[np.minimum(np.arange(len(tok)) + 16, len(tok) - 1)]
                diffs.append(((tok - future) ** 2).mean())
                total.append(tok.reshape(-1, tok.shape[-1]).var(0).mean())
                per_token.append(tok.var(0).mean())
            mse = float(np.mean(diffs))
            row['lworld'] = {'mse': round(mse, 5),
                             'rel_token_var': round(mse / float(np.mean(total)), 4),
                             'rel_per_token_var_over_frames':
                                 round(mse / float(np.mean(per_token)), 4)}
        models[spec] = model
        print(json.dumps(row), flush=True)
    # encode time: the towers interleaved, so a busy machine slows them alike
    # (process CPU time too: on a shared machine the wall clock counts the waiting)
    times = {spec: ([], []) for spec in models}
    with torch.no_grad():
        for i in range(5 + args.time_repeats):
            for spec, model in models.items():
                tic, cpu = time.perf_counter(), time.process_time()
                model.system2.encode_images(images[i % len(images):][:1])
                if i >= 5:
                    times[spec][0].append(time.perf_counter() - tic)
                    times[spec][1].append(time.process_time() - cpu)
    for spec, (wall, cpu) in times.items():
        print(json.dumps({'tower': spec, 'encode_ms': {
            'wall_median': round(1000 * float(np.median(wall)), 2),
            'wall_min': round(1000 * float(np.min(wall)), 2),
            'cpu_median': round(1000 * float(np.median(cpu)), 2)}}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
