"""Test helpers for real ROS 2 processes: a per-run domain, child processes, a probe node."""
import contextlib
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time

from dial_ros.evaluate.graph import GraphClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / '.venv' / 'bin' / 'python')


def domain_id(tag):
    """A ROS_DOMAIN_ID of this test run and tag (100-230): runs never see each other."""
    return random.Random(f'{tag}-{os.getpid()}-{time.time_ns()}').randint(100, 230)


def child_env(domain):
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_DOMAIN_ID=str(domain),
               OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    return env


def start(cmd, domain, log_path):
    """Start a child in its own process group, output to ``log_path``."""
    log = open(log_path, 'w')
    return subprocess.Popen(cmd, env=child_env(domain), stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)


def stop(proc, sig=signal.SIGINT, timeout=30.0):
    """Signal the child's process group and wait; SIGKILL if it does not exit. Exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def pids_of(module, domain):
    """Pids of processes running ``python -m <module>`` in ``domain``."""
    found = []
    for entry in pathlib.Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / 'cmdline').read_bytes().split(b'\0')
            environ = (entry / 'environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if module.encode() in cmdline and f'ROS_DOMAIN_ID={domain}'.encode() in environ:
            found.append(int(entry.name))
    return found


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
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               OMP_NUM_THREADS='1', RCUTILS_LOGGING_BUFFERED_STREAM='0',
               RCUTILS_COLORIZED_OUTPUT='0', PYTHONUNBUFFERED='1')
    with open(log_path, 'w') as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stop_node(proc):
    """SIGINT, then SIGKILL after 10 s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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
