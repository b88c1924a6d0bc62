"""Test helpers for real ROS 2 processes: a per-run domain, child processes, a probe node.

Children start and stop through :mod:`dial_ros.procs` (localhost discovery, own domain, own
process group; stop escalates SIGINT -> SIGTERM -> SIGKILL).
"""
import contextlib
import os
import pathlib
import signal
import sys
import threading
import time

from dial_ros import procs
from dial_ros.evaluate.graph import GraphClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / '.venv' / 'bin' / 'python')
# the same helpers under the names the tests use
domain_id = procs.new_domain_id
pids_of = procs.pids_in_domain


def child_env(domain):
    """The environment of a child on ``domain`` (for subprocess.run)."""
    return procs.ros_env(domain, OMP_NUM_THREADS='1')


def start(cmd, domain, log_path):
    """Start a child in its own process group, output to ``log_path``."""
    return procs.start(cmd, domain, log_path, env=child_env(domain))


def stop(proc, sig=signal.SIGINT, timeout=30.0):
    """Signal the child's process group and wait, escalating to SIGKILL. Exit code."""
    return procs.stop(proc, sig, timeout)


class Probe:
    """An rclpy node in the test process with its own context and a spinning thread."""

    def __init__(self, domain, name='probe'):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.received = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def record(self, topic, msg_type, qos, convert=lambda m: m):
        """Keep (receive time, convert(msg)) of every message on ``topic``."""
        self.received[topic] = []

        def callback(msg):
            with self.lock:
                self.received[topic].append((time.monotonic(), convert(msg)))
        self.node.create_subscription(msg_type, topic, callback, qos)

    def since(self, topic, start):
        with self.lock:
            return [(t, m) for t, m in self.received[topic] if t >= start]

    def rate(self, topic, seconds):
        start = time.monotonic()
        time.sleep(seconds)
        return len(self.since(topic, start)) / seconds

    def wait_for(self, topic, count=1, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received[topic]) >= count:
                    return True
            time.sleep(0.05)
        return False

    def set_parameters(self, node_name, timeout=10.0, **values):
        """Set parameters through the node's service, as rqt_reconfigure does."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        client = self.node.create_client(SetParameters, f'/{node_name}/set_parameters')
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f'/{node_name}/set_parameters not available')
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.node.destroy_client(client)
        return future.result().results

    def close(self):
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def start_node(module, domain, log_path, **params):
    """Start ``python -m dial_ros.nodes.<module>`` with localhost discovery on ``domain``."""
    cmd = [PYTHON if os.path.exists(PYTHON) else sys.executable, '-m',
           f'dial_ros.nodes.{module}', '--ros-args']
    for name, value in params.items():
        cmd += ['-p', f'{name}:={value}']
    env = procs.ros_env(domain, OMP_NUM_THREADS='1', RCUTILS_LOGGING_BUFFERED_STREAM='0',
                        RCUTILS_COLORIZED_OUTPUT='0')
    return procs.start(cmd, domain, log_path, env=env)


@contextlib.contextmanager
def probe_graph(test_name, probe_name, sig=signal.SIGINT, timeout=30.0):
    """(domain, Probe, procs) for one test; the processes appended to ``procs`` are stopped
    with ``sig`` (escalating, see ``stop``) and the probe closed afterwards."""
    domain = domain_id(test_name)
    probe = Probe(domain, probe_name)
    started = []
    try:
        yield domain, probe, started
    finally:
        for proc in started:
            stop(proc, sig, timeout=timeout)
        probe.close()


def stop_node(proc):
    """SIGINT, then SIGTERM and SIGKILL after 10 s each; returns the exit code."""
    return procs.stop(proc, signal.SIGINT, timeout=10.0)


class RosPeer(GraphClient):
    """The test's own rclpy context and node, on the child's domain (see GraphClient)."""

    def __init__(self, domain):
        super().__init__(domain, 'test_peer')


@contextlib.contextmanager
def running_node(module, domain, log_path, **params):
    """A node process and a RosPeer on its domain, both closed on exit: (peer, proc)."""
    proc = start_node(module, domain, log_path, **params)
    peer = None
    try:
        peer = RosPeer(domain)
        yield peer, proc
    finally:
        if peer is not None:
            peer.close()
        stop_node(proc)


def diagnostic_value(diagnostics, name, key):
    """``key`` of status ``name`` (e.g. '/controller') in collected DiagnosticArrays, or None."""
    for msg in diagnostics:
        for status in msg.status:
            if status.name == name:
                return {kv.key: kv.value for kv in status.values}.get(key)
    return None


def lifecycle_state(peer, node, timeout=120.0):
    """The label of a lifecycle node's current state, through /<node>/get_state.

    An autostarting node answers once its model is loaded: slow on a loaded machine.
    """
    from lifecycle_msgs.srv import GetState
    request = GetState.Request()
    return peer.call(GetState, f'/{node}/get_state', request, timeout).current_state.label


def change_state(peer, node, transition, timeout=120.0):
    """Request ``transition`` ('configure', 'activate', ...) of a lifecycle node; success.

    The timeout is generous: a configure loads a model (and imports torch the first time),
    which takes long on a loaded two-core machine.
    """
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    transition_id = getattr(Transition, f'TRANSITION_{transition.upper()}')
    request = ChangeState.Request(transition=Transition(id=transition_id))
    return peer.call(ChangeState, f'/{node}/change_state', request, timeout).success
