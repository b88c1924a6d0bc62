"""Convert recorded episodes (rosbag2 directories) into a LeRobot v3.0 dataset.

    python -m dial_ros.data.convert --bags recordings/ --out datasets/pick \\
        --embodiment gr1_sim [--fps 20] [--skip-outcomes fail,discard] [--trim-idle] \\
        [--skip-sources policy] [--intervention-weight 2]

Each bag directory is one episode. A bag that cannot be used (unreadable, truncated to
nothing, a missing topic, joint names that do not match the embodiment, no images) is
skipped with a reason naming it, and the rest converts; the summary lists both.
An episode tagged ``source: intervention`` with ``intervention_segments`` (the recorder's
takeover tags, see ``interventions``) becomes one dataset episode per segment, each with
the sampling weight ``--intervention-weight``.
"""
import argparse
import dataclasses
import logging
import pathlib
import shutil
import sys
import time

import numpy as np

from dial_ros.data.align import align_episode
from dial_ros.data import interventions
from dial_ros.data.bag import EpisodeError, Topics, find_bags, read_episode, read_tags
from dial_ros.data.lerobot import LeRobotWriter
from dial_ros.data.video import pick_codec
from dial_ros.embodiment import EmbodimentSpec, load_embodiment

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Summary:
    """What a conversion did."""

    out: pathlib.Path
    converted: list = dataclasses.field(default_factory=list)   # (bag, episode, frames)
    skipped: list = dataclasses.field(default_factory=list)     # (bag, reason)
    warnings: dict = dataclasses.field(default_factory=dict)    # bag -> [str]
    seconds: float = 0.0

    @property
    def frames(self):
        return sum(n for _, _, n in self.converted)

    def lines(self):
        out = [f'converted {len(self.converted)} episodes ({self.frames} frames) in '
               f'{self.seconds:.1f} s -> {self.out}; skipped {len(self.skipped)}']
        out += [f'  skipped {bag}: {reason}' for bag, reason in self.skipped]
        return out


def instruction_of(raw):
    """custom_data instruction, else the first /dial/instruction message, else the task."""
    texts = list(dict.fromkeys(text for _, text in raw.instructions if text.strip()))
    if len(texts) > 1:
        raw.warnings.append(f'{len(texts)} different instructions; using the first')
    text = raw.tags.get('instruction') or (texts[0] if texts else raw.tags.get('task', ''))
    if not text.strip():
        raise EpisodeError(f'{raw.name}: no instruction (custom_data instruction/task or '
                           'an instruction message)')
    return text.strip()


def _resize(images, size):
    from PIL import Image
    return [im if im.shape[:2] == (size, size) else
            np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
            for im in images]


def convert(bags, out, embodiment='gr1_sim', fps=20.0, skip_outcomes=('fail', 'discard'),
            trim_idle=False, idle_threshold=0.01, tolerance=None, action_align='next',
            clock='bag', image_size=224, vcodec=None, overwrite=False, topics=None,
            data_files_size_in_mb=100, video_files_size_in_mb=500, skip_sources=(),
            intervention_weight=1.0):
    """Convert bag directories (paths or globs) into a dataset at ``out``; a ``Summary``.

    See ``align`` for the frame, state and action rules and ``lerobot`` for the layout.
    """
    start = time.monotonic()
    intervention_weight = interventions.check_weight(intervention_weight)
    spec = embodiment if isinstance(embodiment, EmbodimentSpec) else \
        load_embodiment(embodiment)
    topics = topics or Topics()
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f'out: {out} exists and is not empty (use --overwrite)')
        if not (out / 'meta' / 'info.json').is_file():
            raise ValueError(f'out: {out} is not a dataset; --overwrite only replaces one')
        shutil.rmtree(out)
    paths = find_bags(bags)
    if not paths:
        raise ValueError(f'bags: no rosbag2 directories found in {list(bags)}')
    codec = pick_codec(vcodec)
    options = {'embodiment': spec.name, 'action_align': action_align, 'clock': clock,
               'tolerance_s': tolerance if tolerance is not None else 1.0 / fps,
               'trim_idle': trim_idle, 'idle_threshold': idle_threshold,
               'skip_outcomes': list(skip_outcomes), 'skip_sources': list(skip_sources),
               'intervention_weight': intervention_weight, 'topics': dataclasses.asdict(topics),
               'eef_layout': 'right pos xyz, right rot6d, left pos xyz, left rot6d (rot6d: '
                             'first two rotation-matrix columns)'}
    writer = LeRobotWriter(out, spec, fps, image_size, codec, extra_info=options,
                           data_files_size_in_mb=data_files_size_in_mb,
                           video_files_size_in_mb=video_files_size_in_mb)
    summary = Summary(out)
    for path in paths:
        name = path.name
        try:
            tags = read_tags(path)
            if tags.get('outcome') in skip_outcomes:
                summary.skipped.append((name, f'outcome {tags["outcome"]!r} is skipped'))
                continue
            if tags.get('source') in skip_sources:
                summary.skipped.append((name, f'source {tags["source"]!r} is skipped'))
                continue
            if tags.get('embodiment', spec.name) not in ('', spec.name):
                summary.skipped.append((name, f'embodiment {tags["embodiment"]!r} is not '
                                              f'{spec.name!r}'))
                continue
            raw = read_episode(path, topics, clock)
            frames = align_episode(raw, spec, fps, tolerance, action_align, trim_idle,
                                   idle_threshold, topics=topics)
            text = instruction_of(raw)
            spans = interventions.segments_of(raw.tags)
            parts = [frames] if spans is None else interventions.split_frames(frames, spans)
            if not parts:
                raise EpisodeError(f'{name}: no intervention segment of 2 frames or more')
            tags = dict(raw.tags, weight=intervention_weight) if spans is not None else raw.tags
            for frames in parts:
                images = _resize([raw.images[i] for i in frames.image_index], image_size)
                if images[0].shape[:2] != raw.images[frames.image_index[0]].shape[:2]:
                    frames.warnings.append(f'images resized from {raw.images[0].shape[1]}x'
                                           f'{raw.images[0].shape[0]}')
                index = writer.add_episode(frames, images, text, tags)
                summary.converted.append((name, index, len(frames)))
        except EpisodeError as err:
            summary.skipped.append((name, str(err).removeprefix(f'{name}: ')))
            LOG.warning('skipped %s', err)
            continue
        except Exception as err:  # an unexpected failure in one episode spares the rest
            LOG.debug('episode %s failed', name, exc_info=True)
            summary.skipped.append((name, f'{type(err).__name__}: {err}'))
            LOG.warning('skipped %s: %s: %s', name, type(err).__name__, err)
            continue
        for warning in frames.warnings:
            LOG.warning('%s: %s', name, warning)
        summary.warnings[name] = frames.warnings
    writer.extra_info['skipped'] = [{'bag': b, 'reason': r} for b, r in summary.skipped]
    writer.close()
    summary.seconds = time.monotonic() - start
    for line in summary.lines():
        LOG.info('%s', line)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bags', nargs='+', required=True,
                        help='bag directories, globs, or folders searched for bags')
    parser.add_argument('--out', required=True, help='dataset folder to create')
    parser.add_argument('--embodiment', default='gr1_sim', help='config name or YAML path')
    parser.add_argument('--fps', type=float, default=20.0, help='frame rate of the dataset')
    parser.add_argument('--skip-outcomes', default='fail,discard',
                        help="comma-separated outcome tags to leave out ('' keeps all)")
    parser.add_argument('--skip-sources', default='',
                        help="comma-separated source tags to leave out, e.g. 'policy' (the "
                        "policy's own rollouts of a DAgger round)")
    parser.add_argument('--intervention-weight', type=float, default=1.0,
                        help='sampling weight in training of the intervention episodes '
                        '(the others: 1)')
    parser.add_argument('--trim-idle', action='store_true',
                        help='drop leading frames before the first motion')
    parser.add_argument('--idle-threshold', type=float, default=0.01,
                        help='motion threshold for --trim-idle (rad or m)')
    parser.add_argument('--tolerance', type=float, default=None,
                        help='max state/command time offset to a frame, s (default 1/fps)')
    parser.add_argument('--action-align', choices=('next', 'previous'), default='next')
    parser.add_argument('--clock', choices=('bag', 'header'), default='bag')
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--vcodec', default=None,
                        help='libx264rgb (lossless, default), libsvtav1, libx264 or mpeg4')
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--verbose', '-v', action='store_true')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(message)s')
    skip = tuple(s.strip() for s in args.skip_outcomes.split(',') if s.strip())
    try:
        summary = convert(args.bags, args.out, args.embodiment, args.fps, skip, args.trim_idle,
                          args.idle_threshold, args.tolerance, args.action_align, args.clock,
                          args.image_size, args.vcodec, args.overwrite,
                          skip_sources=tuple(s.strip() for s in args.skip_sources.split(',')
                                             if s.strip()),
                          intervention_weight=args.intervention_weight)
    except (ValueError, FileNotFoundError) as err:
        LOG.error('%s', err)
        return 2
    return 0 if summary.converted else 1


if __name__ == '__main__':
    sys.exit(main())
