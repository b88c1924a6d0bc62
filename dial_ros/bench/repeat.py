"""Run one benchmark several times, one after the other, and keep the median of each number.

    python -m dial_ros.bench.repeat --runs 3 --out DIR BENCH [BENCH ARGS ...]
    e.g. python -m dial_ros.bench.repeat --runs 3 --out bench/e2e e2e_latency --duration 30

BENCH is a module of dial_ros.bench that takes ``--json OUT``. Each run is a fresh process
(``DIR/run_<i>.json``, its output in ``DIR/run_<i>.log``) started only after the previous one
ended: timing-sensitive runs never overlap. ``DIR/summary.json`` holds, for every number the
runs share (same key path, lists by index), the median over the runs and the values of each
run, plus the machine's load average (1 min) before and after each run. The README quotes
these medians. Exit status: the first failing run's, after all runs.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time


def numbers(tree, path=()):
    """Yield (key path, value) for every int/float leaf of a JSON tree (bools excluded)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, path + (str(key),))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from numbers(value, path + (str(index),))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def medians(results):
    """{'a.b.0.c': {'median': m, 'runs': [...]}} over the leaves every result has."""
    leaves = [dict(numbers(r)) for r in results]
    shared = set(leaves[0]).intersection(*leaves[1:]) if leaves else set()
    out = {}
    for path in sorted(shared):
        values = [leaf[path] for leaf in leaves]
        finite = [v for v in values if v == v]  # NaN != NaN
        out['.'.join(path)] = {'median': statistics.median(finite) if finite else None,
                               'runs': values}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--out', required=True, help='folder for the runs and summary.json')
    parser.add_argument('--pause', type=float, default=5.0,
                        help='seconds between runs (processes of the last one wind down)')
    parser.add_argument('bench', help='a dial_ros.bench module, e.g. e2e_latency')
    parser.add_argument('args', nargs=argparse.REMAINDER, help='its arguments')
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error('--runs: must be >= 1')
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    results, loads, failed = [], [], 0
    for i in range(args.runs):
        if i:
            time.sleep(args.pause)
        path = out / f'run_{i}.json'
        before = os.getloadavg()[0]
        cmd = [sys.executable, '-m', f'dial_ros.bench.{args.bench}', '--json', str(path)]
        with open(out / f'run_{i}.log', 'w') as log:
            code = subprocess.call(cmd + args.args, stdout=log, stderr=subprocess.STDOUT,
                                   env=env)
        loads.append({'run': i, 'load_1min_before': before,
                      'load_1min_after': os.getloadavg()[0], 'exit_code': code})
        print(f'run {i}: exit {code}, load {before:.2f} -> {loads[-1]["load_1min_after"]:.2f}',
              flush=True)
        failed = failed or code
        if code == 0 and path.exists():
            results.append(json.loads(path.read_text()))
    summary = {'benchmark': args.bench, 'arguments': args.args, 'runs': len(results),
               'machine': {'cpus': os.cpu_count()}, 'load': loads,
               'median': medians(results)}
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(f'{len(results)} runs -> {out / "summary.json"}')
    return failed


if __name__ == '__main__':
    sys.exit(main())
