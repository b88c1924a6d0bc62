"""A spin-on-demand rclpy client of a running graph: topics, services, parameters.

Owns its context (on the given domain) and a single-threaded executor that is spun only
while it waits, so callbacks run in the caller's thread and need no locks.
"""
import time


class GraphClient:
    """One node on ``domain``; call :meth:`close` when done.

    ``domain`` None: the environment's ROS_DOMAIN_ID. ``args``: a command line whose
    ``--ros-args`` (parameters, remaps) apply, as a launched node gets them.
    ``handle_signals`` False: rclpy installs no signal handlers, so Ctrl-C is a plain
    KeyboardInterrupt and the context stays usable for the owner's clean-up.
    """

    def __init__(self, domain, name='dial_eval', args=None, handle_signals=True):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(args=args, context=self.context, domain_id=domain,
                   signal_handler_options=None if handle_signals else SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._clients = {}

    def collect(self, msg_type, topic, qos, stamped=True):
        """Subscribe; returns the list that fills with (receive time, message) or messages."""
        got = []
        if stamped:
            self.node.create_subscription(msg_type, topic,
                                          lambda m: got.append((time.monotonic(), m)), qos)
        else:
            self.node.create_subscription(msg_type, topic, got.append, qos)
        return got

    def spin_until(self, condition, timeout):
        """Spin until ``condition()``; False on timeout."""
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.02)
        return True

    def run(self, seconds, rate_hz=None, each=None):
        """Spin for ``seconds``, calling ``each()`` at ``rate_hz``."""
        start = next_t = time.monotonic()
        while time.monotonic() < start + seconds:
            if each is not None and time.monotonic() >= next_t:
                each()
                next_t += 1.0 / rate_hz
            self.executor.spin_once(timeout_sec=0.005)

    def rate(self, got, seconds):
        """Messages per second arriving in ``got`` over ``seconds``."""
        before = len(got)
        self.run(seconds)
        return (len(got) - before) / seconds

    def call(self, srv_type, name, request, timeout=30.0):
        """Call a service and return its response; TimeoutError names the service."""
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f'service {name} never appeared ({timeout:.0f} s)')
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout):
            raise TimeoutError(f'service {name} did not answer in {timeout:.0f} s')
        return future.result()

    def set_parameters(self, node_name, timeout=10.0, **values):
        """Set parameters through the node's service, as rqt_reconfigure does."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        results = self.call(SetParameters, f'/{node_name}/set_parameters', request,
                            timeout).results
        refused = [f'{k}: {r.reason}' for k, r in zip(values, results) if not r.successful]
        if refused:
            raise ValueError(f'/{node_name} refused parameters: {refused}')
        return results

    def get_parameters(self, node_name, names, timeout=10.0):
        """{name: value} of ``node_name``'s parameters, through its service."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        reply = self.call(GetParameters, f'/{node_name}/get_parameters',
                          GetParameters.Request(names=list(names)), timeout)
        return {n: parameter_value_to_python(v) for n, v in zip(names, reply.values)}

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)
