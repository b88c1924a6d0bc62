"""Evaluation episodes against a running humanoid launch (sim), through its ROS interfaces.

Policy episodes (the DIAL controller drives): between episodes the controller is inactive
(lifecycle ``deactivate``: it sends nothing and drops its chunks), the sim gets the split's
task and the episode seed (parameters) and is reset (``/sim/reset``), perception and intent
get ``settle_s`` to see the new scene, then the controller is activated (a fresh start that
ramps in from the measured pose; an e-stop release would instead step from the last command
of the previous episode, which the sim's reset made meaningless): the episode clock starts.
It ends at the first ``/sim/task_success`` (the lift held 1 s: success; the lift's start is
the completion time) or after the timeout. ``/sim/task_progress`` gives the
furthest milestone (task completion). The controller's joint commands and chunk arrivals of
the episode give its smoothness (largest step, jerk at chunk switches; see smoothness.py).

Expert episodes (the scripted expert drives and resets the sim itself): the sim gets the
split's task and seeds, the expert's ``episodes`` parameter is raised by the split's count,
and each /expert/episode start..stop is one episode, judged by the same success and
progress topics and the same timeout.
"""
import json
import time

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Float32, Float64MultiArray, String
from std_srvs.srv import Trigger

from dial_ros.evaluate.smoothness import command_smoothness, switch_indices
from dial_ros.nodes.qos import QOS_COMMAND, QOS_SENSOR
from dial_ros.sim.gr1_env import SUCCESS_HOLD_S
from dial_ros.topics import (TOPIC_CHUNK, TOPIC_COMMAND, TOPIC_EXPERT_EPISODE, TOPIC_INTENT,
                             TOPIC_PROGRESS, TOPIC_SUCCESS)

QOS_STATE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                       history=HistoryPolicy.KEEP_LAST)
# the command QoS with a deep reader queue: a message dropped here would look like a jump
QOS_COMMANDS = QoSProfile(depth=1000, reliability=QOS_COMMAND.reliability,
                          history=QOS_COMMAND.history)


class EpisodeRunner:
    """Runs episodes on ``client`` (a GraphClient) and returns one dict per episode."""

    def __init__(self, client, driver, timeout_s, settle_s=1.0, record=False,
                 command_rate_hz=200.0, smoothness=True):
        self.client, self.driver = client, driver
        self.timeout_s, self.settle_s, self.record = timeout_s, settle_s, record
        self.success = client.collect(Bool, TOPIC_SUCCESS, QOS_STATE)
        self.progress = client.collect(Float32, TOPIC_PROGRESS, QOS_STATE)
        self.events = client.collect(String, TOPIC_EXPERT_EPISODE, QOS_STATE)
        self.expert_episodes = 0
        self.command_rate_hz = command_rate_hz
        self.commands, self.chunks = [], []
        # smoothness False: no reader of the 200-1000 Hz commands (its CPU) and no smoothness
        if driver == 'policy' and smoothness:  # stamped with the reader's arrival time
            from dial_ros.msg import ActionChunk
            node = client.node
            node.create_subscription(Float64MultiArray, TOPIC_COMMAND, lambda m, info:
                                     self.commands.append((info['received_timestamp'],
                                                           m.data)), QOS_COMMANDS)
            node.create_subscription(ActionChunk, TOPIC_CHUNK, lambda m, info:
                                     self.chunks.append(info['received_timestamp']),
                                     QOS_STATE)

    def wait_ready(self, timeout=120.0):
        """Wait until the sim steps and the driver is up; TimeoutError says what is missing."""
        if not self.client.spin_until(lambda: self.progress, timeout):
            raise TimeoutError(f'no {TOPIC_PROGRESS} in {timeout:.0f} s: is the sim up?')
        if self.driver == 'policy':
            from dial_ros.msg import LatentTensor
            intents = self.client.collect(LatentTensor, TOPIC_INTENT, QOS_SENSOR)
            if not self.client.spin_until(lambda: intents, timeout):
                raise TimeoutError(f'no {TOPIC_INTENT} in {timeout:.0f} s: are '
                                   'perception and intent up?')
            self._controller('deactivate', timeout)

    def _controller(self, transition, timeout=30.0):
        """Drive the controller's lifecycle ('activate' / 'deactivate')."""
        from lifecycle_msgs.srv import ChangeState

        from dial_ros.nodes.lifecycle import change_state_request
        if not self.client.call(ChangeState, '/controller/change_state',
                                change_state_request(transition), timeout).success:
            raise RuntimeError(f'controller: {transition} refused (see its log)')

    # --- policy --------------------------------------------------------------------------
    def policy_episode(self, split, episode):
        self.reset_sim(split.seed(episode), task_preset='default', task=json.dumps(split.task))
        return {'split': split.name, 'episode': episode, 'seed': split.seed(episode),
                **self.run_policy()}

    def reset_sim(self, seed, **sim_params):
        """Set the sim's seed (and task ``sim_params``) and reset it (/sim/reset)."""
        c = self.client
        c.set_parameters('sim', seed=seed, **sim_params)
        reply = c.call(Trigger, '/sim/reset', Trigger.Request())
        if not reply.success:
            raise RuntimeError(f'/sim/reset failed: {reply.message}')

    def run_policy(self):
        """After a reset: settle, release the controller, judge, hold it again:
        {success, completion_s, progress, duration_s, smoothness}."""
        c = self.client
        c.run(self.settle_s)
        if self.record:
            c.call(Trigger, '/recorder/start', Trigger.Request())
        self.commands.clear()
        self.chunks.clear()
        self._controller('activate')
        result = self._watch(time.monotonic(), lambda: False)
        self._controller('deactivate')
        if self.record:
            outcome = 'stop_success' if result['success'] else 'stop_fail'
            c.call(Trigger, f'/recorder/{outcome}', Trigger.Request())
        return {**result, 'smoothness': self._smoothness()}

    def _smoothness(self):
        """Step and switch jerk of this episode's commands (see smoothness.py), or None."""
        if len(self.commands) < 4:
            return None
        times = [t for t, _ in self.commands]
        # the first chunk takes over from the hold/ramp, not from another chunk
        switches = switch_indices(times, sorted(self.chunks)[1:])
        result = command_smoothness([list(q) for _, q in self.commands],
                                    self.command_rate_hz, switches)
        return {k: v if not isinstance(v, float) else round(v, 6) for k, v in result.items()}

    def _watch(self, start, finished):
        """Follow success and progress from ``start`` until success, ``finished()`` or the
        timeout: {success, completion_s, progress, duration_s}."""
        done_success = []

        def over():
            now = time.monotonic()
            if any(t >= start and m.data for t, m in self.success):
                done_success.append(min(t for t, m in self.success if t >= start and m.data))
                return True
            return finished() or now - start > self.timeout_s
        self.success.clear()
        self.progress.clear()
        self.client.spin_until(over, self.timeout_s + 5.0)
        end = time.monotonic()
        progress = max([m.data for t, m in self.progress if t >= start] or [0.0])
        success = bool(done_success) and done_success[0] - start <= self.timeout_s
        # /sim/task_success comes when the lift has held SUCCESS_HOLD_S: it began that earlier
        return {'success': success,
                'completion_s': round(done_success[0] - start - SUCCESS_HOLD_S, 3)
                if success else None,
                'progress': round(float(max(progress, 1.0 if success else 0.0)), 4),
                'duration_s': round(end - start, 3)}

    # --- expert --------------------------------------------------------------------------
    def expert_split(self, split, count, on_episode, configured=False):
        """Run ``count`` expert episodes of ``split``; ``on_episode(dict)`` for each.

        ``configured``: the launch parameters already hold this split's task, seed and
        episode count, and the expert waits paused (the first split).
        """
        c = self.client
        self.expert_episodes += count
        self.events.clear()
        if configured:
            c.set_parameters('expert', paused=False)
        else:
            c.set_parameters('sim', task_preset='default', task=json.dumps(split.task),
                             seed=split.seed(0))
            c.set_parameters('expert', episodes=self.expert_episodes)
        for episode in range(count):
            start = self._next_event('start')
            stopped = []
            result = self._watch(start, lambda: stopped or self._pop_event('stop', stopped))
            if not stopped:
                self._next_event('stop', timeout=60.0)
            on_episode({'split': split.name, 'episode': episode, 'seed': split.seed(episode),
                        **result})

    def _pop_event(self, kind, into):
        for i, (t, msg) in enumerate(self.events):
            if json.loads(msg.data).get('event') == kind:
                del self.events[:i + 1]
                into.append(t)
                return True
        return False

    def _next_event(self, kind, timeout=60.0):
        got = []
        if not self.client.spin_until(lambda: self._pop_event(kind, got), timeout):
            raise TimeoutError(f'no expert {kind} event in {timeout:.0f} s')
        return got[0]
