"""Bag command line (stand-ins for ``ros2 bag``, which cannot be installed here).

    python -m dial_ros.bags info <bag> [--json]
    python -m dial_ros.bags record -o DIR [topics ...] [--all] [--max-segment-mb MB]
        [--max-segment-s S] [--compression none|lz4|zstd] [--tag key=value ...] [--duration S]
    python -m dial_ros.bags play <bag> [--rate R] [--loop] [--topics T ...]
        [--start-offset S] [--clock [HZ]] [--delay S] [--wait-for-subscribers S]
    python -m dial_ros.bags recover <bag> [--delete-truncated]

``info`` and ``recover`` need no ROS; ``record`` and ``play`` join the ROS graph (localhost
discovery unless ROS_AUTOMATIC_DISCOVERY_RANGE says otherwise).
"""
import argparse
import json
import logging
import sys


def _parser():
    parser = argparse.ArgumentParser(prog='python -m dial_ros.bags', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('info', help='topics, types, counts, duration, episode tags')
    p.add_argument('bag')
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')

    p = sub.add_parser('record', help='record topics of the live graph into one bag')
    p.add_argument('-o', '--output', required=True, help='bag folder (must not exist)')
    p.add_argument('topics', nargs='*')
    p.add_argument('--all', action='store_true', help='every topic (but /rosout, '
                   '/parameter_events)')
    p.add_argument('--max-segment-mb', type=float, default=0.0, help='0 = no size split')
    p.add_argument('--max-segment-s', type=float, default=0.0, help='0 = no time split')
    p.add_argument('--chunk-s', type=float, default=0.5,
                   help='write a partly filled chunk after this long')
    p.add_argument('--compression', choices=('none', 'lz4', 'zstd'), default='none')
    p.add_argument('--queue-depth', type=int, default=100)
    p.add_argument('--tag', action='append', help='custom_data key=value (repeatable)')
    p.add_argument('--duration', type=float, default=0.0, help='stop after S s (0 = Ctrl-C)')

    p = sub.add_parser('play', help='publish a bag with its original timing')
    p.add_argument('bag')
    p.add_argument('--rate', type=float, default=1.0)
    p.add_argument('--loop', action='store_true')
    p.add_argument('--topics', nargs='+')
    p.add_argument('--start-offset', type=float, default=0.0, help='skip the first S s')
    p.add_argument('--clock', type=float, nargs='?', const=100.0, default=0.0,
                   help='publish /clock at HZ (default 100 when given)')
    p.add_argument('--delay', type=float, default=0.0, help='wait S s before playing')
    p.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                   help='wait up to S s until every topic has a subscriber')

    p = sub.add_parser('recover', help='rebuild a bag cut off by a crash')
    p.add_argument('bag')
    p.add_argument('--delete-truncated', action='store_true',
                   help='delete the original truncated segments (kept as *.truncated)')
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        if args.command == 'info':
            from dial_ros.bags.reader import format_info, info
            summary = info(args.bag)
            print(json.dumps(summary, indent=1) if args.json else format_info(summary))
            return 0
        if args.command == 'recover':
            from dial_ros.bags.recover import recover
            print(json.dumps(recover(args.bag, args.delete_truncated), indent=1))
            return 0
        if args.command == 'record':
            from dial_ros.bags.ros_record import record
            return record(args)
        from dial_ros.bags.ros_play import play
        return play(args)
    except (ValueError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
