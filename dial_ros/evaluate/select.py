"""Pick a training run's checkpoint by closed-loop success on validation seeds.

    python -m dial_ros.evaluate.select --run work/lift/run --episodes 30

Training loss says little about closed-loop behaviour, so each saved checkpoint of the run
(``RUN/checkpoints/step_*``) is evaluated with the fast in-process evaluator on the ``seen``
split at validation seeds (``--seed-base``, 300000 by default: neither the demonstrations
(0, 1, ...) nor any reported evaluation (100000+) use them), all checkpoints on the same
seeds. The best success rate wins (ties: the later checkpoint); ``RUN/checkpoints/best``
points at it and ``RUN/selection.json`` keeps every checkpoint's numbers.
"""
import argparse
import json
import logging
import os
import pathlib
import sys

from dial_ros.evaluate import fast

LOG = logging.getLogger('dial_ros.evaluate.select')
VALIDATION_SEED_BASE = 300000


def checkpoints(run):
    """The run's saved checkpoints in step order."""
    folders = sorted((pathlib.Path(run) / 'checkpoints').glob('step_*'))
    if not folders:
        raise ValueError(f'{run}: no checkpoints/step_* (is it a training run folder?)')
    return folders


def select(run, episodes=30, seed_base=VALIDATION_SEED_BASE, workers=1, last=0):
    """Evaluate the checkpoints (the ``last`` ones only, if > 0); returns the selection."""
    run = pathlib.Path(run)
    folders = checkpoints(run)[-last:] if last else checkpoints(run)
    rows = []
    for folder in folders:
        out = run / 'selection' / f'seeds{seed_base}_n{episodes}' / folder.name
        done = out / 'results.json'
        if not done.is_file():
            args = fast.parser().parse_args([
                '--checkpoint', str(folder), '--episodes', str(episodes), '--split', 'seen',
                '--seed-base', str(seed_base), '--workers', str(workers), '--out', str(out),
                '--label', folder.name])
            fast.evaluate(args)
        result = json.loads(done.read_text())['splits'][0]
        rows.append({'checkpoint': folder.name, 'successes': result['successes'],
                     'episodes': result['episodes'], 'success_rate': result['success_rate'],
                     'task_completion': result['task_completion']})
        LOG.info('%s: %d/%d', folder.name, result['successes'], result['episodes'])
    best = max(reversed(rows), key=lambda r: (r['success_rate'], r['task_completion']))
    link = run / 'checkpoints' / 'best'
    tmp = link.with_name('best.tmp')
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(best['checkpoint'], target_is_directory=True)
    os.replace(tmp, link)
    selection = {'seed_base': seed_base, 'episodes': episodes, 'best': best['checkpoint'],
                 'checkpoints': rows}
    (run / 'selection.json').write_text(json.dumps(selection, indent=2) + '\n')
    return selection


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--run', required=True, help='training run folder')
    p.add_argument('--episodes', type=int, default=30, help='validation episodes each')
    p.add_argument('--seed-base', type=int, default=VALIDATION_SEED_BASE)
    p.add_argument('--last', type=int, default=0, help='only the last N checkpoints')
    p.add_argument('--workers', type=int, default=1)
    args = p.parse_args(argv)
    try:
        selection = select(args.run, args.episodes, args.seed_base, args.workers, args.last)
    except (ValueError, OSError) as err:
        LOG.error('%s', err)
        return 2
    print(json.dumps(selection, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
