"""Latent transport benchmark: a 64x2048 LatentTensor at 10 Hz between two processes.

    python -m dial_ros.bench.latent_transport --json OUT.json [--duration 30] [--rate 10]
        [--profile default|shm|udp|both|all] [--dtype float32|float16|bfloat16|all]
        [--priority N]

A subscriber process and a publisher process (separate Python interpreters, started here with
subprocess) exchange ``dial_ros/LatentTensor`` on the intent topic with the intent QoS. The
publisher writes its wall clock (``time.time_ns``, CLOCK_REALTIME) into ``header.stamp``
right before ``publish``; the subscriber takes the same clock first thing in its callback, so
latency = receive time - send time on one host clock. Also measured: ``fill_latent`` and
``publish`` on the sender, ``read_latent`` on the receiver, and a bit-exact comparison of
every received tensor with the one that was sent (for float16 / bfloat16: with the sent
one's rounding). Bandwidth = CDR bytes published per second of the run (RTPS/UDP headers
not counted). Each latency is split into the publish call and what follows it (transport,
wake-up, take); each role counts its page faults per message. Both roles tune malloc as the
nodes do (dial_ros.alloc); ``--priority N`` runs all their threads at SCHED_FIFO N, as the
controller runs its DDS threads.

Profiles: ``default`` runs with Fast DDS's built-in transports (FASTDDS_DEFAULT_PROFILES_FILE
set empty); ``shm`` with ``config/fastdds_shm.xml`` (32 MiB shared-memory segment); ``udp``
with ``config/fastdds_udp.xml`` (the remote System-2 set-up: UDPv4 only, no shared memory).
``both`` = default + shm, ``all`` = the three. Every
child runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of its own
(random in 100-220 unless ``--domain-id``). Each run also records the transmit packet counters
of every non-loopback interface before and after it (host-wide: other programs' traffic counts
too), the UDP sockets the two processes bound (``ss -uanp``), and the shared-memory segments
they mapped (a 32 MiB one proves the shm profile took effect; shared-memory data lies in
the sender's segment, which the receiver maps too: with the udp profile no data segment is
mapped by both, so no data went that way).
"""
import argparse
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import dial_ros
from dial_ros import procs

PROFILE_VAR = 'FASTDDS_DEFAULT_PROFILES_FILE'
SHAPE = (64, 2048)
PAYLOAD_BYTES = int(np.prod(SHAPE)) * 4  # float32; half of it for float16 / bfloat16
DTYPES = ('float32', 'float16', 'bfloat16')
PROFILE_FILES = {'shm': 'fastdds_shm.xml', 'udp': 'fastdds_udp.xml'}
WARMUP = 5           # messages sent before the measured ones, not counted
MATCH_TIMEOUT = 15.0  # s; discovery on this machine takes 0.1 s or ~2.7 s
LINGER = 5.0         # s the subscriber may take after the publisher is done
STRAGGLERS = 0.3     # s the subscriber keeps listening after the last message arrived
# What Fast DDS logs (once per process, harmless) when FASTDDS_DEFAULT_PROFILES_FILE is empty.
EMPTY_PROFILE_NOTICE = 'realpath failed'


# --- helpers shared by both roles --------------------------------------------------------
def shm_is_default():
    """Whether dial_ros.apply_ros_env_defaults() enables the shm profile by default."""
    saved = os.environ.pop(PROFILE_VAR, None)
    try:
        dial_ros.apply_ros_env_defaults()
        return bool(os.environ.get(PROFILE_VAR))
    finally:
        os.environ.pop(PROFILE_VAR, None)
        if saved is not None:
            os.environ[PROFILE_VAR] = saved


@functools.lru_cache(maxsize=1)
def _base_tensor():
    return np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)


def expected_tensor(seq):
    """Return the tensor sent as message ``seq`` (deterministic: the receiver compares bits)."""
    return _base_tensor() + np.float32(seq % 4096)


def expected_received(seq, dtype):
    """What read_latent must return for message ``seq`` sent as ``dtype`` (its rounding)."""
    from dial_ros.codecs import fill_latent, read_latent
    from dial_ros.msg import LatentTensor
    return read_latent(fill_latent(LatentTensor(), expected_tensor(seq), 0.0, dtype,
                                   valid=True))


def mapped_shm_segments():
    """Fast DDS shared-memory segments mapped by this process: {path: size in bytes}."""
    segments = {}
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith('/dev/shm/fastdds_'):
                    path = parts[5]
                    if path not in segments and os.path.exists(path):
                        segments[path] = os.stat(path).st_size
    except OSError:
        pass
    return segments


def net_tx_packets():
    """Transmit packet counters of every non-loopback interface from /proc/net/dev."""
    counts = {}
    try:
        with open('/proc/net/dev') as f:
            for line in f.readlines()[2:]:
                name, data = line.split(':', 1)
                name = name.strip()
                if name != 'lo':
                    counts[name] = int(data.split()[9])
    except (OSError, ValueError, IndexError):
        pass
    return counts


def udp_sockets(pids):
    """``ss -uanp`` lines (local address only) of the given processes; [] without ss."""
    if not shutil.which('ss'):
        return {}
    try:
        out = subprocess.run(['ss', '-uanpH'], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {name: [] for name in pids}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        for name, pid in pids.items():
            if f'pid={pid},' in line:
                found[name].append(cols[3])
    return {name: sorted(set(addrs)) for name, addrs in found.items()}


def _percentiles(values_ms):
    if not values_ms:
        return {'p50': None, 'p99': None, 'max': None, 'mean': None}
    arr = np.asarray(values_ms, dtype=np.float64)
    return {'p50': round(float(np.percentile(arr, 50)), 4),
            'p99': round(float(np.percentile(arr, 99)), 4),
            'max': round(float(arr.max()), 4),
            'mean': round(float(arr.mean()), 4)}


def _write_json(path, data):
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f)
    os.replace(tmp, path)


# --- child roles (each its own process and rclpy context) --------------------------------
class _Stop:
    """SIGINT/SIGTERM set a flag; the role loops check it and shut down cleanly."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGINT, self._set)
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_):
        self.requested = True


def _ros_init():
    from dial_ros.alloc import keep_large_buffers
    keep_large_buffers()  # as the nodes do (common.run_node)
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    return rclpy


def _minor_faults():
    """Page faults of this process so far (a fresh 512 KiB buffer costs 128 of them)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _set_priority(priority, result):
    """Every thread of this role (DDS ones included) at SCHED_FIFO ``priority`` (0: normal),
    as the controller runs its executor and DDS threads (its ``process_priority``)."""
    if priority <= 0:
        result['scheduling'] = 'normal'
        return
    from dial_ros.nodes.command_stream import set_process_priority
    try:
        set_process_priority(priority)
        result['scheduling'] = f'SCHED_FIFO {priority}'
    except OSError as err:
        result['scheduling'] = f'normal (SCHED_FIFO {priority} refused: {err})'


def role_pub(args):
    """Wait for the subscriber, publish ``warmup + duration * rate`` latents at ``rate``."""
    stop = _Stop()
    rclpy = _ros_init()
    from rclpy.duration import Duration

    from dial_ros.codecs import fill_latent
    from dial_ros.msg import LatentTensor
    from dial_ros.nodes.qos import QOS_LATENT
    from dial_ros.topics import TOPIC_INTENT

    node = rclpy.create_node('latent_bench_pub')
    pub = node.create_publisher(LatentTensor, TOPIC_INTENT, QOS_LATENT)
    result = {'role': 'pub', 'pid': os.getpid(), 'matched': False, 'sent': 0,
              'cdr_bytes': None}
    _set_priority(args.priority, result)
    start = time.monotonic()
    while pub.get_subscription_count() < 1 and not stop.requested:
        if time.monotonic() - start > args.match_timeout:
            break
        time.sleep(0.01)
    result['match_s'] = round(time.monotonic() - start, 3)
    if pub.get_subscription_count() >= 1:
        result['matched'] = True
        total = args.warmup + int(round(args.duration * args.rate))
        period = 1.0 / args.rate
        fill_ms, publish_ms = [], []
        msg = LatentTensor()
        faults0 = _minor_faults()
        next_t = time.monotonic()
        first = last = None
        for seq in range(total):
            if stop.requested:
                break
            tensor = expected_tensor(seq)
            t0 = time.perf_counter_ns()
            fill_latent(msg, tensor, 0.0, args.dtype, seq=seq, valid=True,
                        model_id='latent_transport', valid_for=1.0, horizon=0)
            t1 = time.perf_counter_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10 ** 9)
            pub.publish(msg)
            t2 = time.perf_counter_ns()
            if result['cdr_bytes'] is None:
                from rclpy.serialization import serialize_message
                result['cdr_bytes'] = len(serialize_message(msg))
            if seq >= args.warmup:
                fill_ms.append((t1 - t0) * 1e-6)
                publish_ms.append((t2 - t1) * 1e-6)
                result['sent'] += 1
                first = first if first is not None else time.monotonic()
                last = time.monotonic()
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # fell behind: do not burst to catch up
        result['total_published'] = seq + 1 if total else 0
        if first is not None and last > first:
            result['rate_hz_achieved'] = round((result['sent'] - 1) / (last - first), 3)
        try:
            result['all_acked'] = bool(pub.wait_for_all_acked(Duration(seconds=3.0)))
        except Exception as err:  # telemetry only
            result['all_acked'] = repr(err)
        result['fill_ms'] = fill_ms
        result['publish_ms'] = publish_ms
        result['first_seq'] = args.warmup
        result['minor_faults'] = _minor_faults() - faults0
    result['shm_segments'] = mapped_shm_segments()
    _write_json(args.out, result)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if result['matched'] else 2


def role_sub(args):
    """Receive latents until the last one arrives (or a stop/deadline); stamp and check each."""
    stop = _Stop()
    rclpy = _ros_init()
    from dial_ros.codecs import read_latent
    from dial_ros.msg import LatentTensor
    from dial_ros.nodes.qos import QOS_LATENT
    from dial_ros.topics import TOPIC_INTENT

    last_seq = args.warmup + int(round(args.duration * args.rate)) - 1
    state = {'latency_ms': [], 'latency_seqs': [], 'read_ms': [], 'seqs': set(),
             'duplicates': 0,
             'mismatches': 0, 'errors': [], 'warmup_received': 0, 'last_at': None}

    def on_latent(msg):
        t_recv = time.time_ns()
        t_sent = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
        seq = int(msg.seq)
        t0 = time.perf_counter_ns()
        try:
            tensor = read_latent(msg, SHAPE)
        except ValueError as err:
            state['errors'].append(f'seq {seq}: {err}')
            return
        t1 = time.perf_counter_ns()
        if not np.array_equal(tensor.view(np.uint32),
                              expected_received(seq, args.dtype).view(np.uint32)):
            state['mismatches'] += 1
        if seq >= last_seq and state['last_at'] is None:
            state['last_at'] = time.monotonic()
        if seq < args.warmup:
            state['warmup_received'] += 1
            return
        if seq in state['seqs']:
            state['duplicates'] += 1
            return
        state['seqs'].add(seq)
        state['latency_ms'].append((t_recv - t_sent) * 1e-6)
        state['latency_seqs'].append(seq)
        state['read_ms'].append((t1 - t0) * 1e-6)

    node = rclpy.create_node('latent_bench_sub')
    node.create_subscription(LatentTensor, TOPIC_INTENT, on_latent, QOS_LATENT)
    scheduling = {}
    _set_priority(args.priority, scheduling)
    faults0 = _minor_faults()
    deadline = time.monotonic() + args.match_timeout + args.duration + args.warmup / args.rate \
        + 2 * LINGER
    while not stop.requested and time.monotonic() < deadline:
        # After the last message, keep listening a moment for a repaired straggler.
        if state['last_at'] is not None and time.monotonic() > state['last_at'] + STRAGGLERS:
            break
        rclpy.spin_once(node, timeout_sec=0.05)
    result = {'role': 'sub', 'pid': os.getpid(), 'received': len(state['seqs']),
              'duplicates': state['duplicates'], 'mismatches': state['mismatches'],
              'warmup_received': state['warmup_received'], 'errors': state['errors'][:10],
              'got_last': state['last_at'] is not None, 'latency_ms': state['latency_ms'],
              'latency_seqs': state['latency_seqs'],
              'read_ms': state['read_ms'], 'shm_segments': mapped_shm_segments(),
              'minor_faults': _minor_faults() - faults0,
              **scheduling}
    _write_json(args.out, result)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# --- orchestration -----------------------------------------------------------------------
def profile_path(profile):
    """The XML file of ``profile`` ('shm' or 'udp'), found like every data file."""
    from dial_ros import paths
    try:
        return str(paths.config_file(PROFILE_FILES[profile]))
    except FileNotFoundError:
        raise FileNotFoundError(f'config/{PROFILE_FILES[profile]} not found (share/dial_ros '
                                'or source)') from None


def child_env(profile, domain_id, profile_file=None):
    """Environment of a child: localhost discovery, own domain, the profile or none."""
    # SKIP_DEFAULT_XML_FILE: ignore a stray DEFAULT_FASTDDS_PROFILES.xml in cwd
    env = procs.ros_env(domain_id, RMW_IMPLEMENTATION='rmw_fastrtps_cpp',
                        SKIP_DEFAULT_XML_FILE='1')
    if profile in PROFILE_FILES:
        env[PROFILE_VAR] = profile_file or profile_path(profile)
    else:
        env[PROFILE_VAR] = ''  # empty = Fast DDS built-in transports
    return env


def run_pair(profile, duration=30.0, rate=10.0, domain_id=None, profile_file=None,
             warmup=WARMUP, match_timeout=MATCH_TIMEOUT, dtype='float32', priority=0):
    """Run one subscriber + one publisher process; return the merged results of one run."""
    if dtype not in DTYPES:
        raise ValueError(f'dtype {dtype!r} is not one of {list(DTYPES)}')
    if domain_id is None:
        domain_id = procs.new_domain_id('latent_transport')
    env = child_env(profile, domain_id, profile_file)
    common = ['--duration', str(duration), '--rate', str(rate), '--warmup', str(warmup),
              '--match-timeout', str(match_timeout), '--dtype', dtype,
              '--priority', str(priority)]
    me = [sys.executable, '-m', 'dial_ros.bench.latent_transport']
    with tempfile.TemporaryDirectory(prefix='latent_transport_') as tmp:
        files = {r: {k: os.path.join(tmp, f'{r}.{k}') for k in ('json', 'log')}
                 for r in ('sub', 'pub')}
        children = {}
        load_before = os.getloadavg()
        tx_before = net_tx_packets()
        wall0 = time.monotonic()
        try:
            for role in ('sub', 'pub'):
                children[role] = procs.start(
                    me + ['--role', role, '--out', files[role]['json']] + common, domain_id,
                    files[role]['log'], env=env, cwd=None)
            sockets = {}
            limit = wall0 + match_timeout + duration + warmup / rate + 3 * LINGER + 10
            while children['pub'].poll() is None and time.monotonic() < limit:
                snap = udp_sockets({r: p.pid for r, p in children.items()})
                if snap and all(snap.values()):
                    sockets = snap
                time.sleep(1.0)
            _finish(children['pub'], 3.0, 3.0)
            _finish(children['sub'], LINGER + 5.0, 5.0)
        finally:
            for proc in children.values():
                procs.stop(proc, signal.SIGKILL, timeout=10.0)
        wall = time.monotonic() - wall0
        tx_after = net_tx_packets()
        load_after = os.getloadavg()
        out = {}
        for role in ('sub', 'pub'):
            try:
                with open(files[role]['json']) as f:
                    out[role] = json.load(f)
            except (OSError, ValueError):
                out[role] = {}
            with open(files[role]['log']) as f:
                out[role]['log_tail'] = f.read()[-2000:]
            out[role]['returncode'] = children[role].returncode
    return _summarise(profile, dtype, env, domain_id, duration, rate, out, sockets,
                      tx_before, tx_after, load_before, load_after, wall)


def _finish(proc, grace, timeout):
    """Let a role exit by itself within ``grace`` s, else SIGTERM it (then SIGKILL)."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        procs.stop(proc, signal.SIGTERM, timeout)


def _summarise(profile, dtype, env, domain_id, duration, rate, out, sockets, tx_before,
               tx_after, load_before, load_after, wall):
    pub, sub = out['pub'], out['sub']
    lat = _percentiles(sub.get('latency_ms', []))
    fill = _percentiles(pub.get('fill_ms', []))
    publish = _percentiles(pub.get('publish_ms', []))
    both = [a + b for a, b in zip(pub.get('fill_ms', []), pub.get('publish_ms', []))]
    # latency = publish call + (transport, wake-up, take and conversion to Python): split
    publish_by_seq = dict(enumerate(pub.get('publish_ms', []), start=pub.get('first_seq', 0)))
    after_publish = _percentiles([
        lat_ms - publish_by_seq[seq]
        for seq, lat_ms in zip(sub.get('latency_seqs', []), sub.get('latency_ms', []))
        if seq in publish_by_seq])
    fill_publish = _percentiles(both)
    read = _percentiles(sub.get('read_ms', []))
    segments = {**pub.get('shm_segments', {}), **sub.get('shm_segments', {})}
    problems = [f'{r}: {line.strip()}' for r in ('pub', 'sub')
                for line in out[r].get('log_tail', '').splitlines()
                if ('error' in line.lower() or 'warning' in line.lower())
                and not (profile == 'default' and EMPTY_PROFILE_NOTICE in line)]
    sent, received = pub.get('sent', 0), sub.get('received', 0)
    achieved = pub.get('rate_hz_achieved')
    cdr = pub.get('cdr_bytes')
    return {
        'profile': profile,
        'dtype': dtype,
        'scheduling': {r: out[r].get('scheduling') for r in ('pub', 'sub')},
        'minor_faults_per_msg': {r: round(out[r].get('minor_faults', 0) / max(sent, 1), 1)
                                 for r in ('pub', 'sub')},
        'profile_file': env[PROFILE_VAR] or None,
        'domain_id': domain_id,
        'payload_bytes': PAYLOAD_BYTES * (4 if dtype == 'float32' else 2) // 4,
        'cdr_bytes': cdr,
        'bandwidth_bytes_per_s': round(cdr * achieved) if cdr and achieved else None,
        'shape': list(SHAPE),
        'rate_hz': rate,
        'rate_hz_achieved': pub.get('rate_hz_achieved'),
        'duration_s': duration,
        'sent': sent,
        'received': received,
        'lost': max(sent - received, 0),
        'duplicates': sub.get('duplicates'),
        'bit_exact': bool(received) and sub.get('mismatches', 1) == 0,
        'mismatches': sub.get('mismatches'),
        'p50_ms': lat['p50'], 'p99_ms': lat['p99'], 'max_ms': lat['max'],
        'mean_ms': lat['mean'],
        'fill_ms': fill, 'publish_ms': publish, 'fill_publish_ms': fill_publish,
        'after_publish_ms': after_publish,
        'read_ms': read,
        'match_s': pub.get('match_s'),
        'all_acked': pub.get('all_acked'),
        'shm_segment_bytes_max': max(segments.values()) if segments else 0,
        'shm_segments': sorted(segments.values()),
        'shm_segment_bytes_max_by_role': {
            r: max(out[r].get('shm_segments', {}).values(), default=0) for r in ('pub', 'sub')},
        # Shared memory carried data only if a process opened a port segment (where a sender
        # posts buffer descriptors) or mapped its peer's segment (where the data lies).
        'shm_ports_by_role': {r: sum('fastdds_port' in p for p in out[r].get('shm_segments', {}))
                              for r in ('pub', 'sub')},
        'shm_segments_shared': len({p for p in pub.get('shm_segments', {})
                                    if 'fastdds_port' not in p}
                                   & set(sub.get('shm_segments', {}))),
        'udp_sockets': sockets,
        'net_tx_packets_delta': {k: tx_after.get(k, 0) - v for k, v in tx_before.items()},
        'loadavg_before': [round(x, 2) for x in load_before],
        'loadavg_after': [round(x, 2) for x in load_after],
        'wall_s': round(wall, 2),
        'returncodes': {'pub': pub.get('returncode'), 'sub': sub.get('returncode')},
        'problems': problems[:10],
    }


def _fmt(value, digits=3):
    return '-' if value is None else f'{value:.{digits}f}'


def print_table(runs):
    cols = ('profile', 'dtype', 'sent', 'recv', 'exact', 'p50 ms', 'p99 ms', 'max ms',
            'fill+pub p50', 'fill+pub p99', 'after pub p99', 'read p50', 'MB/s',
            'shm seg MiB',
            'non-lo tx pkts')
    rows = [cols]
    for r in runs:
        bandwidth = r['bandwidth_bytes_per_s']
        rows.append((r['profile'], r['dtype'], str(r['sent']), str(r['received']),
                     'yes' if r['bit_exact'] else 'NO', _fmt(r['p50_ms']), _fmt(r['p99_ms']),
                     _fmt(r['max_ms']), _fmt(r['fill_publish_ms']['p50']),
                     _fmt(r['fill_publish_ms']['p99']), _fmt(r['after_publish_ms']['p99']),
                     _fmt(r['read_ms']['p50']),
                     _fmt(bandwidth and bandwidth / 1e6, 2),
                     _fmt(r['shm_segment_bytes_max'] / 2 ** 20, 1),
                     str(sum(r['net_tx_packets_delta'].values()))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    for row in rows:
        print('  '.join(c.rjust(w) for c, w in zip(row, widths)))


def main(argv=None):
    """Run the benchmark (orchestrator), or one of its child roles."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--json', help='write results here')
    parser.add_argument('--duration', type=float, default=30.0, help='measured seconds')
    parser.add_argument('--rate', type=float, default=10.0, help='publish rate [Hz]')
    parser.add_argument('--profile', choices=('default', 'shm', 'udp', 'both', 'all'),
                        default='both', help='both: default + shm; all: the three')
    parser.add_argument('--dtype', choices=DTYPES + ('all',), default='float32',
                        help='element type on the wire (all: one run per dtype)')
    parser.add_argument('--priority', type=int, default=0,
                        help='SCHED_FIFO priority of both processes, all threads (the '
                        "controller's process_priority is 10; 0: normal scheduling)")
    parser.add_argument('--shm-profile', help='Fast DDS XML for the shm run '
                        '(default: config/fastdds_shm.xml)')
    parser.add_argument('--domain-id', type=int, help='first ROS_DOMAIN_ID (default: random '
                        '100-230; the next run uses the next one)')
    parser.add_argument('--warmup', type=int, default=WARMUP, help=argparse.SUPPRESS)
    parser.add_argument('--match-timeout', type=float, default=MATCH_TIMEOUT,
                        help=argparse.SUPPRESS)
    parser.add_argument('--role', choices=('pub', 'sub'), help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return role_pub(args) if args.role == 'pub' else role_sub(args)
    if not args.json:
        parser.error('--json is required')
    if args.rate <= 0 or args.duration <= 0:
        parser.error('--rate and --duration must be positive')
    if not 0 <= args.priority <= 98:
        parser.error('--priority must be 0 (normal) to 98')
    profiles = {'both': ('default', 'shm'), 'all': ('default', 'shm', 'udp')}.get(
        args.profile, (args.profile,))
    dtypes = DTYPES if args.dtype == 'all' else (args.dtype,)
    domain = args.domain_id if args.domain_id is not None else random.randint(100, 220)
    runs = []
    for i, (profile, dtype) in enumerate((p, d) for p in profiles for d in dtypes):
        runs.append(run_pair(profile, args.duration, args.rate, domain + i,
                             args.shm_profile if profile == 'shm' else None, args.warmup,
                             args.match_timeout, dtype, args.priority))
    print_table(runs)
    for r in runs:
        for problem in r['problems']:
            print(f"{r['profile']} {r['dtype']}: {problem}", file=sys.stderr)
    names = [r['profile'] for r in runs]
    preferred = 'shm' if shm_is_default() else 'default'
    main_run = runs[names.index(preferred)] if preferred in names else runs[0]
    report = {k: main_run[k] for k in ('profile', 'dtype', 'payload_bytes', 'rate_hz', 'sent',
                                       'received', 'p50_ms', 'p99_ms', 'max_ms',
                                       'bandwidth_bytes_per_s')}
    report.update({'runs': runs, 'shm_enabled_by_default': shm_is_default(),
                   'cpu_count': os.cpu_count(), 'python': sys.version.split()[0]})
    _write_json(args.json, report)
    print(f'wrote {args.json} (main run: {main_run["profile"]} {main_run["dtype"]})')
    ok = all(r['sent'] and r['received'] == r['sent'] and r['bit_exact'] for r in runs)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
