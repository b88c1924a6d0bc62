"""Success statistics of evaluation episodes and their JSON / Markdown forms (no ROS)."""
import math

Z95 = 1.959963984540054


def wilson_interval(successes, trials, z=Z95):
    """95 % Wilson score interval of a success rate: (low, high); (0, 1) without trials.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n
    successes, which small evaluations hit often.
    """
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(split, episodes):
    """Per-split result: the fields the issue names plus task completion and counts.

    ``episodes``: dicts with ``success`` (bool), ``completion_s`` (float or None) and
    ``progress`` (0..1, the furthest milestone reached).
    """
    n = len(episodes)
    wins = sum(bool(e['success']) for e in episodes)
    low, high = wilson_interval(wins, n)
    times = [e['completion_s'] for e in episodes if e['success']]
    return {
        'split': split, 'episodes': n, 'successes': wins,
        'success_rate': wins / n if n else 0.0, 'ci95_low': low, 'ci95_high': high,
        'mean_completion_s': sum(times) / len(times) if times else None,
        'task_completion': sum(e['progress'] for e in episodes) / n if n else 0.0,
    }


def _pct(x):
    return '-' if x is None else f'{100 * x:.0f}'


def markdown_table(rows):
    """Rows of result dicts (with ``label`` and ``demos``) as one Markdown table."""
    lines = ['| method | demos | split | episodes | success % (95 % CI) | task completion % '
             '| mean completion s |', '|---|---|---|---|---|---|---|']
    for r in rows:
        time_s = '-' if r['mean_completion_s'] is None else f'{r["mean_completion_s"]:.1f}'
        lines.append(f'| {r.get("label", "")} | {r.get("demos") or "-"} | {r["split"]} | '
                     f'{r["episodes"]} | {_pct(r["success_rate"])} ({_pct(r["ci95_low"])}-'
                     f'{_pct(r["ci95_high"])}) | {_pct(r["task_completion"])} | {time_s} |')
    return '\n'.join(lines) + '\n'


def mcnemar_exact(only_a, only_b):
    """Two-sided exact McNemar p-value from the discordant pairs (a binomial test at 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_difference(a, b, resamples=10000, seed=0):
    """Success of method A minus method B on the same episodes (paired by seed).

    ``a``, ``b``: {seed: success}. Only the seeds both have count. Returns {pairs, rate_a,
    rate_b, difference, ci95_low, ci95_high (paired bootstrap percentile interval),
    only_a, only_b (discordant pairs), mcnemar_p (exact, two-sided)}.
    """
    import numpy as np
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError('paired_difference: the two runs share no seeds')
    x = np.array([bool(a[s]) for s in seeds], float)
    y = np.array([bool(b[s]) for s in seeds], float)
    diff = x - y
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    only_a, only_b = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    return {'pairs': len(seeds), 'rate_a': float(x.mean()), 'rate_b': float(y.mean()),
            'difference': float(diff.mean()),
            'ci95_low': float(np.percentile(boot, 2.5)),
            'ci95_high': float(np.percentile(boot, 97.5)),
            'only_a': only_a, 'only_b': only_b, 'mcnemar_p': mcnemar_exact(only_a, only_b)}
