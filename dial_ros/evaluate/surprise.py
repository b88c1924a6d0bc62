"""How well surprise detects a perturbed episode: nominal vs perturbed, in one process.

    python -m dial_ros.evaluate.surprise --episodes 20 --out evals/surprise

Runs the fast evaluator's sim + policy loop (``closed_loop.ClosedLoop``, the stack's clocks)
with the bundled checkpoint and scores every intent with the surprise monitor's own core
(:class:`dial_ros.core.surprise.SurpriseMonitor`), on the same stamps the nodes use (frame
``k`` is stamped ``k`` control periods after the release). Each seed runs once nominal and
once per perturbation kind (``dial_ros.sim.perturb``), applied at a step drawn in
``--perturb-at`` (the same step, drawn per seed, marks the nominal run's window); episodes
do not end on success, so every run lasts that step plus ``--window`` steps.

Writes OUT/surprise.json: per kind the ROC AUC of the per-episode peak surprise in the
window (perturbed vs nominal, the same seeds), the share of perturbed episodes whose alarm
fires in the window and the median control periods from the perturbation to the first
alarm (at ``error_threshold`` and at ``warn_threshold``), and the nominal false-alarm rate
(any alarm in the whole nominal episode); OUT/episodes.jsonl holds every episode. The
controller's ``surprise_takeover_s`` rule (ERROR without a break for that long,
:class:`~dial_ros.core.surprise.ErrorRun`) is replayed on the scores for each ``--takeover-s``:
the same shares and delays under ``takeover_<s>s``.
"""
import argparse
import functools
import json
import logging
import os
import pathlib
import sys
import time

import numpy as np

from dial_ros.core.surprise import ErrorRun, SurpriseMonitor
from dial_ros.sim.perturb import KINDS

LOG = logging.getLogger('dial_ros.evaluate.surprise')
ROOT = pathlib.Path(__file__).resolve().parents[2]
# What each score row holds after the frame index: the published surprise, and two scale-free
# alternatives not divided by the copy baseline (reported beside it, see the README).
SIGNALS = ('surprise', 'mse_over_token_var', 'cosine_gap')
SEED_BASE = 700000  # used by no other split (eval 100000+, validation 300000+, demos < 100000)
PERIOD_S = 0.05     # the sim's control period: score rows count frames of it


def roc_auc(negatives, positives):
    """P(a positive scores above a negative), ties count half (Mann-Whitney U / n m)."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not len(neg) or not len(pos):
        raise ValueError('roc_auc: needs at least one negative and one positive')
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(neg) * len(pos)))


def make_loop(warn, error, relative_error=0.5):
    """The ClosedLoop subclass that taps frames and intents; built after mujoco/torch import."""
    from dial_ros.evaluate.closed_loop import ClosedLoop
    from dial_ros.sim import perturb

    class SurpriseLoop(ClosedLoop):
        """ClosedLoop that scores intents and applies one perturbation; never ends early."""

        def episode(self, seed, kind, perturb_step, window):
            period = self.sim.control_dt
            self.monitor = SurpriseMonitor(period, period / 2, warn=warn, error=error,
                                           relative_error=relative_error)
            self.frames, self.scores, self.steps, self.count = [], [], 0, -1
            self.kind, self.perturb_step = kind, perturb_step
            self.rng = np.random.default_rng(seed + 1)
            self.timeout_s = (perturb_step + window) * period
            encode = self.policy.encode_frame

            def tap(image):  # frame k (after step k) is stamped k periods after the release
                tokens = encode(image)
                stamp = self.count * period  # -1: the reset's frame
                self.count += 1
                self.frames = self.frames[-8:] + [(stamp, tokens)]
                self._keep(self.monitor.add_observation(stamp, tokens))
                return tokens
            self.policy.encode_frame = tap
            try:
                self.run(kind or 'nominal', 0, seed)
            finally:
                del self.policy.encode_frame
            return self.scores

        def _keep(self, results):
            period = self.sim.control_dt
            self.scores += [(int(round(r.target_stamp / period)), r.surprise,
                             r.mse / r.token_var, 1.0 - r.cosine) for r in results]

        def _intent(self, tokens):
            out = super()._intent(tokens)
            stamp = next(s for s, t in reversed(self.frames) if t is tokens)
            horizon = self.policy.model.config.foresight_horizon
            self._keep(self.monitor.add_intent(stamp, out[0], horizon))
            return out

        def _step(self, command, tracker):
            if self.kind and self.steps == self.perturb_step:
                perturb.apply(self.sim, self.kind, self.rng)
            self.steps += 1
            obs, _ = super()._step(command, tracker)
            return obs, None  # no early end on success: every run lasts its window

    return SurpriseLoop


def alarm_rules(warn, error, relative_error):
    """Alarm name -> test of one score row ``[frame, surprise, relative_mse, cosine_gap]``."""
    def node_error(x):  # the node's ERROR level: either rule
        return x[1] >= error or 0 < relative_error <= x[2]
    return {'error': node_error,
            'error_surprise_only': lambda x: x[1] >= error,
            'warn_or_error': lambda x: x[1] >= warn or node_error(x)}


def first_alarm(scores, start, rule):
    """Periods from the perturbation at step ``start`` to the first alarm at or after it."""
    hits = [x[0] for x in scores if x[0] >= start and rule(x)]
    return min(hits) + 1 - start if hits else None


def first_takeover(scores, start, rule, hold_s, period_s=PERIOD_S):
    """Periods from step ``start`` to the first score at or after it at which ``rule`` has
    held for ``hold_s`` without a break (the controller's surprise_takeover_s), or None."""
    run = ErrorRun()
    for x in sorted(scores, key=lambda x: x[0]):
        lasted = run.update(x[0] * period_s, rule(x))
        if x[0] >= start and lasted >= hold_s - 1e-9:
            return x[0] + 1 - start
    return None


def summarize(rows, warn, error, relative_error, takeover_s=()):
    """Per kind and overall: AUC, detection share, latency; nominal false alarms."""
    rules = alarm_rules(warn, error, relative_error)
    # alarm name -> (scores, start) -> periods from start to it, or None
    alarms = {name: functools.partial(first_alarm, rule=rule) for name, rule in rules.items()}
    for hold_s in takeover_s:
        alarms[f'takeover_{hold_s:g}s'] = functools.partial(first_takeover, rule=rules['error'],
                                                            hold_s=hold_s)
    nominal = [r for r in rows if r['kind'] == 'nominal']
    base = [r['peak_window'] for r in nominal]
    out = {'nominal': {'episodes': len(nominal), 'peak_all_quantiles_50_90_100': [
        float(np.quantile([r['peak_all'] for r in nominal], q)) for q in (0.5, 0.9, 1.0)]}}
    for name, alarm in alarms.items():  # an alarm anywhere in a nominal run is a false one
        out['nominal'][f'false_alarm_{name}'] = float(np.mean(
            [alarm(r['scores'], 0) is not None for r in nominal]))
    kinds = sorted({r['kind'] for r in rows} - {'nominal'})
    for kind in kinds + (['all'] if kinds else []):
        mine = [r for r in rows if r['kind'] != 'nominal' and kind in ('all', r['kind'])]
        entry = {'episodes': len(mine), 'auc': roc_auc(base, [r['peak_window'] for r in mine]),
                 'peak_window_median': float(np.median([r['peak_window'] for r in mine]))}
        for signal in SIGNALS[1:]:
            key = f'{signal}_peak_window'
            entry[f'auc_{signal}'] = roc_auc([r[key] for r in nominal], [r[key] for r in mine])
        for name, alarm in alarms.items():
            delays = [alarm(r['scores'], r['perturb_step']) for r in mine]
            fired = [d for d in delays if d is not None]
            entry[f'detected_{name}'] = len(fired) / len(mine)
            entry[f'periods_to_{name}_median'] = float(np.median(fired)) if fired else None
        out[kind] = entry
    return out


def evaluate(args):
    """Run every seed nominal and perturbed; return the results dict (also written)."""
    import torch
    torch.set_num_threads(1)
    import dial_ros.sim  # noqa: F401 - headless GL backend before mujoco
    from dial_ros.model.default import load_model
    from dial_ros.model.policy import DialPolicy
    from dial_ros.sim.gr1_env import GR1Sim

    if not 1 <= args.episodes <= 10000:
        raise ValueError(f'--episodes: {args.episodes} is not in 1..10000')
    kinds = [] if args.nominal_only else args.kind or list(KINDS)
    low, high = args.perturb_at
    if not 0 <= low <= high:
        raise ValueError(f'--perturb-at: {low} {high} is not a range of steps')
    model, model_id = load_model(args.checkpoint)
    loop = make_loop(args.warn, args.error, args.relative_error)(GR1Sim(), DialPolicy(model))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / 'episodes.jsonl'
    log_path.write_text('')
    rows, tic = [], time.monotonic()
    rules = alarm_rules(args.warn, args.error, args.relative_error)
    for i in range(args.episodes):
        seed = args.seed_base + i
        step = int(np.random.default_rng(seed).integers(low, high + 1))
        for kind in ['nominal'] + kinds:
            scores = loop.episode(seed, None if kind == 'nominal' else kind, step, args.window)
            row = {'seed': seed, 'kind': kind, 'perturb_step': step}
            for i, signal in enumerate(SIGNALS, 1):
                row[f'{signal}_peak_window'] = max(x[i] for x in scores if x[0] >= step)
            row.update({
                   'peak_window': row['surprise_peak_window'],
                   'peak_all': max(x[1] for x in scores),
                   'peak_before': max([x[1] for x in scores if x[0] < step], default=0.0),
                   'scores': [[x[0]] + [round(v, 4) for v in x[1:]] for x in scores]})
            rows.append(row)
            with open(log_path, 'a') as f:
                f.write(json.dumps(row) + '\n')
            LOG.info('seed %d %s: peak %.2f in the window (%.2f before), ERROR after %s '
                     'periods', seed, kind, row['peak_window'], row['peak_before'],
                     first_alarm(scores, step, rules['error']))
    results = {'command': 'python -m dial_ros.evaluate.surprise ' + ' '.join(args.argv),
               'checkpoint': args.checkpoint or 'bundled', 'model_id': model_id,
               'seeds': [args.seed_base, args.seed_base + args.episodes - 1],
               'perturb_at_steps': [low, high], 'window_steps': args.window,
               'wall_s': round(time.monotonic() - tic, 1)}
    return write_summary(results, rows, args)


def write_summary(results, rows, args):
    """Add the thresholds and the summary to ``results``; write OUT/surprise.json."""
    results.update(warn_threshold=args.warn, error_threshold=args.error,
                   relative_mse_error=args.relative_error,
                   takeover_s=args.takeover_s,
                   summary=summarize(rows, args.warn, args.error, args.relative_error,
                                     args.takeover_s))
    (pathlib.Path(args.out) / 'surprise.json').write_text(json.dumps(results, indent=2) + '\n')
    return results


def resummarize(args):
    """Summarise OUT/episodes.jsonl again under other thresholds (nothing is rerun)."""
    out = pathlib.Path(args.out)
    rows = [json.loads(line) for line in (out / 'episodes.jsonl').read_text().splitlines()]
    results = json.loads((out / 'surprise.json').read_text())
    results['resummarized'] = 'python -m dial_ros.evaluate.surprise ' + ' '.join(args.argv)
    return write_summary(results, rows, args)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--checkpoint', default='', help='checkpoint folder ("" = the bundled one)')
    p.add_argument('--episodes', type=int, default=20, help='seeds (each run 1 + kinds times)')
    p.add_argument('--seed-base', type=int, default=SEED_BASE, help='first seed')
    p.add_argument('--kind', action='append', choices=KINDS, help='only this perturbation')
    p.add_argument('--nominal-only', action='store_true', help='no perturbed runs (to '
                   'calibrate the thresholds on seeds of their own)')
    p.add_argument('--perturb-at', type=int, nargs=2, default=(40, 60), metavar=('LOW', 'HIGH'),
                   help='steps after the release between which the perturbation comes')
    p.add_argument('--window', type=int, default=60, help='steps after the perturbation')
    p.add_argument('--warn', type=float, default=2.5, help='WARN threshold (node default)')
    p.add_argument('--error', type=float, default=5.0, help='ERROR threshold (node default)')
    p.add_argument('--relative-error', type=float, default=0.5,
                   help='relative_mse ERROR threshold (node default; 0 = off)')
    p.add_argument('--takeover-s', type=float, nargs='*', default=[0.5, 1.0],
                   help="the controller's surprise_takeover_s values to replay")
    p.add_argument('--resummarize', action='store_true', help="only summarise OUT's "
                   'episodes again under the thresholds given')
    p.add_argument('--out', default=str(ROOT / 'evals' / 'surprise'), help='results folder')
    return p


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.argv = argv
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    try:
        results = resummarize(args) if args.resummarize else evaluate(args)
    except (ValueError, OSError) as err:
        LOG.error('%s', err)
        return 2
    print(json.dumps(results['summary'], indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
