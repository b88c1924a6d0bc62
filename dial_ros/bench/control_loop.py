"""Command-stream benchmark: achieved rate and period jitter of the controller at 200-1000 Hz.

    python -m dial_ros.bench.control_loop --json OUT.json [--duration 30] [--rates 200 500 1000]
        [--priorities 50 0] [--gil-probe-s 5]

By default (``--load launch``) the deployed system runs: ``ros2 launch dial_ros
humanoid.launch.py`` on the embedded sim with the bundled checkpoint (sim, perception, intent
and controller, their config/humanoid.yaml settings), started once; each rate and priority is
then set live through /controller/set_parameters, as an operator would in rqt. Otherwise the
controller runs as its own process per rate, fed by the intent, perception and sim nodes
(``--load nodes``) or by a feeder process (``--load synthetic``: intents at 5 Hz,
observation latents at 20 Hz, joint states at 100 Hz). After a warm-up, the rate is set
(again), which restarts the controller's own statistics; then for ``--duration`` seconds:

* send side (what a rate target means): the controller's command thread times its own
  ticks and reports them on /diagnostics (``send_total_*``): period jitter = |period -
  1/rate|, missed ticks = deadlines passed by more than one period;
* receive side: each Float64MultiArray's arrival time in this process's DDS reader (rmw
  message info ``received_timestamp``, taken before the Python executor sees it), which
  adds loopback DDS transport to the jitter; also the publish-time series
  (``source_timestamp``), the one-way latency and lost messages (sequence-number gaps).

Each rate runs once per ``--priorities`` value (the controller's ``realtime_priority``:
SCHED_FIFO for its command thread, with its other threads at ``--process-priority``; 0 =
everything at normal scheduling). ``gil_probe`` runs the command
thread alone in this process at 1 kHz, without and with DialPolicy.act at 10 Hz in a second
thread: what the GIL costs, without DDS or other processes' timing in the way.

Every process runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and one domain id of its own.
"""
import argparse
import json
import os
import pathlib
import platform
import signal
import sys
import threading
import time

import numpy as np

import dial_ros
from dial_ros import procs
from dial_ros.codecs import fill_latent, now_sec

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
NODES = ('sim', 'perception', 'intent')
INSTRUCTION = 'pick up the cube and lift it'
SEND_KEYS = ('achieved_hz', 'jitter_p50_ms', 'jitter_p99_ms', 'jitter_max_ms',
             'missed_ticks', 'ticks', 'seconds')


def python():
    venv = ROOT / '.venv' / 'bin' / 'python'
    return str(venv if venv.exists() else sys.executable)


def node_cmd(name, params):
    args = [x for k, v in params.items() for x in ('-p', f'{k}:={v}')]
    return [python(), '-m', f'dial_ros.nodes.{name}', '--ros-args'] + args


def cpu_seconds(pid):
    """Return the user + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return float('nan')


def interval_stats(times, target_hz):
    """Return rate, |interval - period| jitter and gaps (in periods) of times (s)."""
    times = np.asarray(times)
    if times.size < 3:
        return {'count': int(times.size)}
    gaps = np.diff(times)
    period = 1.0 / target_hz
    jitter = np.abs(gaps - period) * 1e3
    p50, p99 = np.percentile(jitter, [50, 99])
    late = gaps[gaps > 1.5 * period]
    return {'count': int(times.size),
            'achieved_hz': float((times.size - 1) / (times[-1] - times[0])),
            'jitter_p50_ms': float(p50), 'jitter_p99_ms': float(p99),
            'jitter_max_ms': float(jitter.max()),
            'missed_ticks': int(np.sum(np.round(late / period) - 1))}


def receive_stats(samples, target_hz):
    """Summarise (python time, rmw received, rmw source, seq) per command message."""
    if len(samples) < 3:
        return {'count': len(samples), 'measured_on': 'receive'}
    _, received, source, seq = (np.array(col) for col in zip(*samples))
    order = np.argsort(received)
    latency = (received - source) * 1e3
    lost = int(np.sum(np.diff(np.sort(seq)) - 1)) if np.all(seq > 0) else None
    return dict(interval_stats(received[order], target_hz), measured_on='receive',
                latency_p50_ms=float(np.median(latency)),
                latency_p99_ms=float(np.percentile(latency, 99)), lost=lost,
                source_timestamps=interval_stats(np.sort(source), target_hz))


class Feeder:
    """Synthetic load in a process of its own: joint states, observation latents, intents."""

    def __init__(self, domain, model_id, token_shape, joint_names):
        import rclpy
        from sensor_msgs.msg import JointState

        from dial_ros.msg import LatentTensor
        from dial_ros.nodes.qos import QOS_LATENT, QOS_SENSOR
        from dial_ros.topics import TOPIC_INTENT, TOPIC_JOINT_STATES, TOPIC_OBSERVATION
        self.LatentTensor, self.JointState = LatentTensor, JointState
        rclpy.init(domain_id=domain)
        self.node = node = rclpy.create_node('control_loop_feeder')
        self.model_id, self.token_shape = model_id, tuple(token_shape)
        self.joint_names = list(joint_names)
        self.rng = np.random.default_rng(0)
        self.js_pub = node.create_publisher(JointState, TOPIC_JOINT_STATES, QOS_SENSOR)
        self.obs_pub = node.create_publisher(LatentTensor, TOPIC_OBSERVATION, QOS_LATENT)
        self.intent_pub = node.create_publisher(LatentTensor, TOPIC_INTENT, QOS_LATENT)
        node.create_timer(0.01, self._publish_joints)
        node.create_timer(0.05, lambda: self.obs_pub.publish(self._latent()))
        node.create_timer(0.2, lambda: self.intent_pub.publish(self._latent(valid_for=1.0)))

    def _latent(self, **fields):
        tensor = self.rng.standard_normal(self.token_shape, np.float32)
        return fill_latent(self.LatentTensor(), tensor, now_sec(self.node), valid=True,
                           model_id=self.model_id, **fields)

    def _publish_joints(self):
        msg = self.JointState(name=self.joint_names, position=[0.0] * len(self.joint_names))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.js_pub.publish(msg)


def run_feeder(args):
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from dial_ros.embodiment import load_embodiment
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    shape = [int(x) for x in args.feeder_shape.split(',')]
    feeder = Feeder(int(os.environ['ROS_DOMAIN_ID']), args.feeder_model_id, shape,
                    load_embodiment(args.embodiment).joint_names)
    try:
        rclpy.spin(feeder.node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    rclpy.try_shutdown()
    return 0


class Bench:
    """The benchmark's receiver node: command arrival times, diagnostics, the rate parameter."""

    def __init__(self, domain, receive=True):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float64MultiArray

        from dial_ros.topics import TOPIC_COMMAND
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = node = rclpy.create_node('control_loop_bench', context=self.context)
        self.lock = threading.Lock()
        self.times, self.diags, self.receive = [], [], receive
        # arrival times come from the middleware (message info), not from when this Python
        # executor gets to the callback; raw (no deserialisation) and a deep queue, so that
        # a slow executor loses nothing
        deep = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)
        if receive:  # --no-receive: no reader of its own on the command topic
            node.create_subscription(Float64MultiArray, TOPIC_COMMAND, self._on_command,
                                     deep, raw=True)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.params = node.create_client(SetParameters, '/controller/set_parameters')
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_command(self, msg, info):
        # list.append is atomic under the GIL
        self.times.append((time.perf_counter(), info['received_timestamp'] * 1e-9,
                           info['source_timestamp'] * 1e-9,
                           info.get('publication_sequence_number') or 0))

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.endswith('/controller'):
                values = {kv.key: kv.value for kv in status.values}
                with self.lock:
                    self.diags.append((time.perf_counter(), status.message, values))

    def set_rate(self, hz, timeout=10.0):
        self.set_params({'control_rate_hz': int(hz)}, timeout)

    def set_params(self, values, timeout=10.0):
        """Set controller parameters in order (one call each); RuntimeError if refused."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        if not self.params.wait_for_service(timeout_sec=timeout):
            raise RuntimeError('/controller/set_parameters: no service')
        for name, value in values.items():
            future = self.params.call_async(SetParameters.Request(
                parameters=[Parameter(name, value=value).to_parameter_msg()]))
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not future.done() or not future.result().results[0].successful:
                raise RuntimeError(f'setting {name} to {value} failed')

    def diagnostics_since(self, start):
        with self.lock:
            return [(t, m, v) for t, m, v in self.diags if t >= start]

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def wait_tracking(bench, proc, timeout):
    """Wait until the controller computes chunks and streams commands (not only holds)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f'controller exited with {proc.returncode}')
        diags = bench.diagnostics_since(start)
        if diags and int(diags[-1][2].get('chunks', 0)) > 0 and (
                bench.times or not bench.receive):
            return time.perf_counter() - start
        time.sleep(0.2)
    raise RuntimeError(f'controller not tracking after {timeout} s')


def gil_probe(policy, seconds, priority, process_priority):
    """Time the command thread at 1 kHz here, without and with a 10 Hz act() thread.

    With act(), once with this process's other threads at normal scheduling and once at
    ``process_priority`` (as the controller runs them): the difference is the priority
    inversion through the GIL on a loaded machine.
    """
    from dial_ros.nodes.command_stream import CommandStream
    sys.setswitchinterval(0.0002)  # as the controller does
    obs = np.zeros(policy.token_shape, np.float32)
    joints = np.zeros(len(policy.joint_names))
    out = {}
    cases = (('no_inference', False, 0), ('act_at_10hz_others_normal', True, 0),
             (f'act_at_10hz_others_fifo_{process_priority}', True, process_priority))
    for name, infer, others in cases:
        stop = threading.Event()

        def work():
            while not stop.wait(0.1):
                policy.act(obs, obs, joints, seed=0)

        worker = threading.Thread(target=work, daemon=True)
        stream = CommandStream(lambda: None, 1000, priority=priority)
        stream.start()
        time.sleep(0.1)
        stream.set_process_priority(others if priority else 0)
        if infer:
            worker.start()
        time.sleep(seconds)
        out[name] = dict(stream.stats.total(), scheduling=stream.scheduling)
        stop.set()
        stream.stop()
        stream.set_process_priority(0)
        if infer:
            worker.join()
    return out


def run_rate(bench, hz, priority, args, domain, log_dir, launch=None):
    """One rate and priority: its own controller process, or set live in ``launch``."""
    # realtime: the defaults (command thread SCHED_FIFO 50, the other threads 10); 0: normal
    process = args.process_priority if priority else 0
    params = {'control_rate_hz': hz, 'embodiment': args.embodiment,
              'realtime_priority': priority, 'process_priority': process}
    proc = launch or procs.start(node_cmd('controller', params), domain,
                                 log_dir / f'controller_{hz}hz_prio{priority}.log')
    try:
        startup = wait_tracking(bench, proc, args.startup_timeout)
        if launch is not None:  # in an order that keeps process_priority < realtime_priority
            order = (('realtime_priority', priority), ('process_priority', process))
            bench.set_params(dict(order if priority else order[::-1]))
        time.sleep(args.warmup)
        bench.set_rate(hz)  # restarts the controller's send-side statistics
        start, wall0, cpu0 = time.perf_counter(), time.time(), cpu_seconds(proc.pid)
        del bench.times[:]
        time.sleep(args.duration)
        end, wall1, cpu1 = time.perf_counter(), time.time(), cpu_seconds(proc.pid)
        deadline = end + 2.5  # the diagnostics of the last full second; queue drained
        while time.perf_counter() < deadline and not bench.diagnostics_since(end + 0.5):
            time.sleep(0.05)
        diags = bench.diagnostics_since(start + 0.5)
        samples = [x for x in bench.times if wall0 <= x[1] <= wall1]
    finally:
        if launch is None:
            procs.stop(proc, timeout=10.0)
    if not diags:
        raise RuntimeError(f'{hz} Hz: no diagnostics from the controller')
    last = diags[-1][2]
    run = {'target_hz': hz, 'measured_on': 'send', 'realtime_priority': priority,
           'process_priority': process,
           'scheduling': last.get('scheduling')}
    for key in SEND_KEYS:
        value = float(last[f'send_total_{key}'])
        run[key] = int(value) if key in ('missed_ticks', 'ticks') else value
    lat = [float(v['chunk_inference_ms_p50']) for _, _, v in diags
           if v.get('chunk_inference_ms_p50', 'nan') != 'nan']
    lat_max = [float(v['chunk_inference_ms_max']) for _, _, v in diags
               if v.get('chunk_inference_ms_max', 'nan') != 'nan']
    run.update({
        'receive': receive_stats(samples, hz),
        'send_busy_p99_ms': float(np.median([float(v['send_busy_p99_ms']) for _, _, v in diags
                                             if v.get('send_busy_p99_ms', 'nan') != 'nan']
                                            or [np.nan])),
        'chunk_inference_ms_p50': float(np.median(lat)) if lat else None,
        'chunk_inference_ms_max': max(lat_max) if lat_max else None,
        'chunks_per_s': (sum(int(v.get('chunks_in_window', 0)) for _, _, v in diags)
                         / max(len(diags), 1)),
        'tracking_fraction': sum(v.get('safety_state') in ('ok', 'ramping')
                                 for _, _, v in diags) / len(diags),
        'hold_reasons': sorted({m.split(' (')[0] for _, m, v in diags
                                if v.get('safety_state') not in ('ok', 'ramping')}),
        'controller_cpu_percent': 100.0 * (cpu1 - cpu0) / (end - start),
        'startup_s': startup,
    })
    return run


def start_nodes(domain, embodiment, log_dir):
    children = []
    for name in NODES:
        params = {'embodiment': embodiment} if name != 'sim' else {}
        if name == 'intent':
            params['instruction'] = f'"{INSTRUCTION}"'
        children.append(procs.start(node_cmd(name, params), domain, log_dir / f'{name}.log'))
    return children


def print_table(runs):
    head = (f'{"target":>7} {"prio":>4} {"side":>8} {"achieved":>9} {"p50 ms":>8} {"p99 ms":>8} '
            f'{"max ms":>8} {"missed":>7}')
    lines = [head, '-' * len(head)]
    for run in runs:
        for side, r in (('send', run), ('receive', run['receive'])):
            lines.append(f'{run["target_hz"]:>7} {run["realtime_priority"]:>4} {side:>8} '
                         f'{r.get("achieved_hz", 0):>9.1f} {r.get("jitter_p50_ms", 0):>8.3f} '
                         f'{r.get("jitter_p99_ms", 0):>8.3f} {r.get("jitter_max_ms", 0):>8.3f} '
                         f'{r.get("missed_ticks", 0):>7}')
    sys.stdout.write('\n'.join(lines) + '\n')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--json', required=True, help='write the results here')
    parser.add_argument('--duration', type=float, default=30.0, help='seconds per rate')
    parser.add_argument('--rates', type=int, nargs='+', default=[200, 500, 1000])
    parser.add_argument('--load', choices=('launch', 'nodes', 'synthetic'), default='launch',
                        help='launch: the humanoid launch (deployed settings); nodes: a '
                        'controller per rate fed by the sim, perception and intent nodes; '
                        'synthetic: fed by a feeder process')
    parser.add_argument('--priorities', type=int, nargs='+', default=[50, 0],
                        help="the controller's realtime_priority values to run (0 = normal)")
    parser.add_argument('--process-priority', type=int, default=10,
                        help="the controller's process_priority where realtime_priority > 0")
    parser.add_argument('--gil-probe-s', type=float, default=5.0, help='0 to skip')
    parser.add_argument('--no-receive', action='store_true',
                        help='send side only: the benchmark does not subscribe to the commands')
    parser.add_argument('--embodiment', default='gr1_sim')
    parser.add_argument('--warmup', type=float, default=3.0)
    parser.add_argument('--startup-timeout', type=float, default=90.0)
    parser.add_argument('--feeder', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--feeder-model-id', help=argparse.SUPPRESS)
    parser.add_argument('--feeder-shape', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.feeder:
        return run_feeder(args)
    synthetic = args.load == 'synthetic'
    domain = procs.new_domain_id('control_loop')
    os.environ.update(OMP_NUM_THREADS='1')
    os.environ.update({k: v for k, v in procs.ros_env(domain).items()
                       if k in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID')})
    dial_ros.apply_ros_env_defaults()
    from dial_ros.nodes.common import load_policy
    policy, model_id = load_policy('', args.embodiment, 0)
    out = pathlib.Path(args.json)
    log_dir = out.parent / (out.stem + '_logs')
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    launch = None
    if args.load == 'launch':
        # the robot's launch: no foresight panel (off with sim:=false unless asked)
        launch = procs.start([python(), '-m', 'dial_ros.launch_runner', 'dial_ros',
                              'humanoid.launch.py', 'foresight_view:=false'],
                             domain, log_dir / 'launch.log')
        feeders = [launch]
    elif synthetic:
        shape = ','.join(str(n) for n in policy.token_shape)
        cmd = [python(), '-m', 'dial_ros.bench.control_loop', '--json', '-', '--feeder',
               '--feeder-model-id', model_id, '--feeder-shape', shape,
               '--embodiment', args.embodiment]
        feeders = [procs.start(cmd, domain, log_dir / 'feeder.log')]
    else:
        feeders = start_nodes(domain, args.embodiment, log_dir)
    bench = Bench(domain, receive=not args.no_receive)
    runs, probe = [], None
    try:
        for priority in args.priorities:
            for hz in args.rates:
                runs.append(run_rate(bench, hz, priority, args, domain, log_dir, launch))
                print_table(runs[-1:])
    finally:
        bench.close()
        for proc in feeders:
            procs.stop(proc, timeout=10.0)
    if args.gil_probe_s > 0:  # after the feeders stopped: the GIL alone, not the machine
        probe = gil_probe(policy, args.gil_probe_s, max(args.priorities),
                          args.process_priority)
    load = {'launch': 'launch: ros2 launch dial_ros humanoid.launch.py (embedded sim, bundled '
                      'checkpoint, config/humanoid.yaml); rate and priorities set live',
            'synthetic': 'synthetic: a feeder process published intents at 5 Hz, observation '
                         'latents at 20 Hz and joint states at 100 Hz',
            'nodes': f'nodes: {", ".join(NODES)} ran as processes (instruction '
                     f'{INSTRUCTION!r})'}[args.load]
    result = {
        'benchmark': 'control_loop',
        'command': ' '.join(['python -m dial_ros.bench.control_loop'] + (argv or sys.argv[1:])),
        'jitter_measured_on': 'runs[] top level: send side, the controller timing its own '
                              'command ticks (what the rate target means); runs[].receive: '
                              'receive side, arrival times in the DDS reader of the bench '
                              'process (rmw received_timestamp: adds DDS transport, not the '
                              'Python executor); runs[].receive.source_timestamps: the same '
                              'messages by their publish stamps',
        'jitter_definition': '|period - 1/target_hz| per consecutive tick, ms',
        'missed_ticks_definition': 'send: deadlines passed by more than one period (skipped, '
                                   'not caught up); receive: gaps over 1.5 periods, in periods',
        'load': load, 'duration_s': args.duration, 'warmup_s': args.warmup,
        'model_id': model_id, 'embodiment': args.embodiment,
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version(),
                    'loadavg_before': load_before, 'loadavg_after': os.getloadavg()},
        'runs': runs,
        'gil_probe': probe,
    }
    out.write_text(json.dumps(result, indent=2) + '\n')
    print_table(runs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
