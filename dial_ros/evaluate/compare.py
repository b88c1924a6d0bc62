"""Paired comparison of two evaluation runs on the same seeds (method A minus method B).

    python -m dial_ros.evaluate.compare evals/dial_200 evals/groot_200 [--json OUT.json]

Reads each run's episodes.jsonl (``python -m dial_ros.evaluate`` or ``.fast``) and, per split
both runs have, pairs the episodes by seed: the success-rate difference with a 95 % paired
bootstrap interval and the exact McNemar p-value of the discordant pairs.
"""
import argparse
import json
import pathlib
import sys

from dial_ros.evaluate.metrics import paired_difference


def episodes(run):
    """{split: {seed: success}} of a run folder (or its episodes.jsonl)."""
    path = pathlib.Path(run)
    path = path / 'episodes.jsonl' if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f'{path}: not found (run an evaluation first)')
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            e = json.loads(line)
            out.setdefault(e['split'], {})[e['seed']] = bool(e['success'])
    return out


def compare(run_a, run_b):
    """[{split, ...paired_difference}] for the splits both runs evaluated."""
    a, b = episodes(run_a), episodes(run_b)
    return [{'split': split, **paired_difference(a[split], b[split])}
            for split in a if split in b and set(a[split]) & set(b[split])]


def markdown(rows, label_a='A', label_b='B'):
    lines = [f'| split | pairs | {label_a} % | {label_b} % | difference, points (95 % CI) '
             f'| {label_a} only / {label_b} only | McNemar p |', '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["split"]} | {r["pairs"]} | {100 * r["rate_a"]:.0f} | '
                     f'{100 * r["rate_b"]:.0f} | {100 * r["difference"]:+.0f} '
                     f'({100 * r["ci95_low"]:+.0f} to {100 * r["ci95_high"]:+.0f}) | '
                     f'{r["only_a"]} / {r["only_b"]} | {r["mcnemar_p"]:.3g} |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('run_a')
    p.add_argument('run_b')
    p.add_argument('--labels', nargs=2, default=('A', 'B'), help='names of the two methods')
    p.add_argument('--json', default='', help='also write the rows to this file')
    args = p.parse_args(argv)
    try:
        rows = compare(args.run_a, args.run_b)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if not rows:
        print('the runs share no split and seed', file=sys.stderr)
        return 2
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2) + '\n')
    print(markdown(rows, *args.labels), end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())
