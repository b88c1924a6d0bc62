"""System-1 controller: latent intent + observation -> action chunks -> joint command stream.

    python -m dial_ros.nodes.controller --ros-args -p control_rate_hz:=500

Two loops in one process. Chunk inference is event-driven: each new observation latent
wakes the inference thread, which runs DialPolicy.act on it, the newest valid intent and the
joint state of that frame (an observation that arrived before any fresh intent is served
when one arrives), and pushes the chunk into a ChunkScheduler stamped with the
observation time (latency compensation, blended transitions); the command stream follows it
from its next tick. ``chunk_rate_hz`` is an upper bound: a frame stamped less than
0.9 / chunk_rate_hz after the previous chunk's frame is skipped (the slack absorbs camera
jitter), so a 20 Hz camera with the default 10 Hz gives a chunk on every other frame, each
computed the moment its frame arrives. The command stream (its own thread,
see command_stream.py) samples the scheduler, passes the target through the SafetyFilter
(limits, velocity, max step, ramp, hold on stale input, e-stop, dry run) and publishes it
as Float64MultiArray (ros2_control JointGroupPositionController), JointTrajectory and/or
JointState. Stale inputs make it hold: it keeps sending the held position, because
ros2_control forward controllers have no timeout of their own.

Lifecycle (lifecycle.py): ``configure`` checks the parameters, loads System-1 and subscribes
(inputs keep flowing while inactive, so the measured pose is fresh at activation);
``activate`` starts the inference and command threads; ``deactivate`` stops both: an
inactive controller sends no commands at all (a forward controller then keeps the last one,
so the robot holds). ``activate`` resets the SafetyFilter, so the first command is the
measured pose (or a ramp from it, ``max_step_rad`` per tick), never a jump to an old command
or chunk; a latched e-stop stays latched through every transition (it can be latched while
unconfigured). ``cleanup`` frees the model. A configure that cannot load the model returns
FAILURE, logs why and leaves the node 'unconfigured'. With ``autostart`` (default) the node
configures and activates itself at start-up (if that fails the process exits 1); with
``autostart:=false`` it waits for /controller/change_state.

``~/take_over`` (std_srvs/SetBool) yields the command stream to a teleop source and hands it
back (takeover.py): the same safety filter, chunks idle meanwhile.
"""
import array
import dataclasses
import math
import re
import sys
import threading
import time

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool

from dial_ros.core.chunking import ChunkScheduler, frame_due, INTERPOLATIONS
from dial_ros.core.safety import SafetyFilter, SafetyLimits, SafetyState
from dial_ros.model.rtc import resample_prefix
from dial_ros.msg import ActionChunk, LatentTensor
from dial_ros.nodes import common
from dial_ros.nodes.command_stream import CommandOutputs, CommandStream
from dial_ros.paths import UNTRAINED
from dial_ros.nodes.lifecycle import ModelNode, free_memory
from dial_ros.nodes.takeover import TakeoverMixin
from dial_ros.schema import setting

OUTPUT_FORMS = ('float64_multi_array', 'joint_trajectory', 'joint_state')
TRANSITIONS = ('crossfade', 'rtc')
FUTURE_TOLERANCE_S = 0.5   # inputs stamped further ahead than this: clocks disagree, drop
LOG_THROTTLE_S = 2.0
JUMP_BACK_S = 1.0          # an observation this much older than the chunk: the clock restarted
IDLE_WAIT_S = 0.1          # the inference thread re-checks for stop at least this often
# The GIL: torch releases it inside ops, but Python between ops holds it; a short switch
# interval bounds how long the command thread waits for it (default 5 ms).
SWITCH_INTERVAL_S = 0.0002


@dataclasses.dataclass
class Params:
    """Every tunable of the controller (ROS parameters; rates change live)."""

    control_rate_hz: int = setting(200, 'joint command stream rate', low=1, high=1000,
                                   unit='Hz')
    chunk_rate_hz: float = setting(10.0, 'most action chunks per second: each new observation '
                                   'triggers one, unless its frame is stamped less than '
                                   '0.9 / chunk_rate_hz after the previous chunk\'s',
                                   low=1.0, high=50.0, unit='Hz')
    chunk_dt_s: float = setting(0.05, 'seconds between chunk waypoints (1 / the control rate '
                                'the model was trained at)', low=0.001, high=1.0, unit='s')
    intent_timeout_s: float = setting(1.0, 'hold when the newest intent is older than this '
                                      '(or past its own valid_for)', low=0.01, high=60.0,
                                      unit='s')
    observation_timeout_s: float = setting(0.5, 'hold when the newest observation latent is '
                                           'older than this', low=0.01, high=60.0, unit='s')
    joint_state_timeout_s: float = setting(0.2, 'hold when the newest joint state is older '
                                           'than this', low=0.001, high=10.0, unit='s')
    ramp_time_s: float = setting(1.0, 'ease-in from the measured pose after start and e-stop '
                                 'release', low=0.0, high=10.0, unit='s')
    max_step_rad: float = setting(0.02, 'largest change of any joint per command tick',
                                  low=1e-5, high=1.0, unit='rad')
    velocity_scale: float = setting(0.5, 'fraction of the embodiment velocity limits allowed',
                                    low=0.01, high=1.0)
    blend_time_s: float = setting(0.1, 'crossfade between consecutive chunks', low=0.0,
                                  high=2.0, unit='s')
    interpolation: str = setting('cubic', 'upsampling of chunk waypoints to the command rate',
                                 choices=INTERPOLATIONS)
    chunk_transition: str = setting('crossfade', 'how a new chunk takes over: crossfade '
                                    '(blend_time_s) or rtc (RTC-style guided sampling towards '
                                    'the running chunk, then rtc_blend_time_s)',
                                    choices=TRANSITIONS)
    rtc_max_guidance: float = setting(5.0, 'rtc: largest guidance weight (beta; the paper '
                                      'uses 5)', low=0.0, high=50.0)
    rtc_delay_steps: int = setting(0, 'rtc: waypoints of the new chunk committed outright '
                                   '(0: estimated from the observation age plus the last '
                                   'inference time)', low=0, high=64)
    rtc_blend_time_s: float = setting(0.02, 'rtc: crossfade after a guided chunk (the guidance '
                                      'makes the chunks agree; this hides the residual)',
                                      low=0.0, high=2.0, unit='s')
    action_noise_scale: float = setting(1.0, 'scale of the flow-matching starting noise of each '
                                        'chunk (1: sample the learned distribution; 0: '
                                        'deterministic, its central path)', low=0.0,
                                        high=2.0)
    dry_run: bool = setting(False, 'compute and log commands but publish none')
    output_forms: list = setting(['float64_multi_array'], 'command messages to publish, any '
                                 'of: ' + ', '.join(OUTPUT_FORMS))
    realtime_priority: int = setting(50, 'SCHED_FIFO priority of the command thread (0: '
                                     'normal scheduling; refused without CAP_SYS_NICE, then '
                                     'normal with a warning)', low=0, high=99)
    process_priority: int = setting(10, 'SCHED_FIFO priority of the other threads (inference, '
                                    'executor, DDS), below realtime_priority: else one of '
                                    'them, preempted while holding the GIL, stalls the '
                                    'command thread (0: normal)', low=0, high=98)
    teleop_timeout_s: float = setting(0.5, 'while yielded to a teleop source (~/take_over): '
                                      'hold when its newest target is older than this',
                                      low=0.01, high=10.0, unit='s')
    surprise_takeover_s: float = setting(0.0, 'yield to the teleop source (~/take_over: it '
                                         'holds until an operator commands) when /dial/surprise '
                                         'has said ERROR for this long (intent stamps); 0 = off',
                                         low=0.0, high=60.0, unit='s')
    hold_on_start: bool = setting(True, 'before the first chunk, stream the measured pose '
                                  '(hold); false: send nothing until a chunk arrives')
    autostart: bool = setting(True, 'configure and activate at start-up (no lifecycle '
                              'manager needed)', read_only=True)
    checkpoint: str = setting('', "DIAL checkpoint folder; '' = the bundled one, 'untrained' = "
                              'an untrained tiny model (only with simulated); applies at the '
                              'next configure')
    embodiment: str = setting('gr1_sim', 'embodiment config name (next configure)')
    seed: int = setting(0, 'seed of the chunk noise (live) and of the untrained model (next '
                        'configure)', low=0, high=2**31 - 1)
    simulated: bool = setting(False, 'the joints are the embedded sim\'s (the launch sets it '
                              'from sim:=); false: an untrained model is refused',
                              read_only=True)

    def check(self):
        """Check the cross-field rules that the per-field schema cannot express."""
        if self.checkpoint == UNTRAINED and not self.simulated:
            raise ValueError(f"checkpoint: {UNTRAINED!r} would send an untrained model's "
                             'actions to a robot; it is allowed only with simulated: true '
                             '(the launch sets it with sim:=true)')
        forms = list(self.output_forms)
        if self.process_priority and self.process_priority >= self.realtime_priority:
            raise ValueError(f'process_priority: {self.process_priority} must be below '
                             f'realtime_priority ({self.realtime_priority}) or 0')
        bad = sorted(set(forms) - set(OUTPUT_FORMS))
        if bad or not forms or len(set(forms)) != len(forms):
            raise ValueError(f'output_forms: {forms!r} must be a non-empty subset of '
                             f'{list(OUTPUT_FORMS)} without repeats (use dry_run to send '
                             f'nothing)')


@dataclasses.dataclass(frozen=True)
class _Input:
    """A validated input: value, stamp (ROS seconds) and when it stops being usable."""

    value: np.ndarray
    stamp: float
    expires: float = math.inf
    key: tuple = ()
    # the message's exact header.stamp (float seconds are ~240 ns coarse at today's epoch)
    stamp_msg: object = None


class ControllerNode(TakeoverMixin, ModelNode):
    """System-1 lifecycle node: chunk inference at chunk_rate_hz, commands at control_rate_hz."""

    def __init__(self, **kwargs):
        super().__init__('controller', **kwargs)
        self.params = common.declare_params(self, Params(), self._on_param, check_now=False)
        self.policy = self.model_id = self.spec = self.scheduler = self.safety = None
        self.outputs = self.chunk_pub = self.stream = self._inference = None
        self.subs = []
        self._active = False
        # the filter is driven by the stream thread and changed from executor threads
        self._safety_lock = threading.Lock()
        # held by inference; deactivate takes it, so no chunk is computed or sent after it
        self._infer_lock = threading.Lock()
        # set by each observation and intent: wakes the inference thread
        self._wake = threading.Event()
        self._estop = False  # latched before configure too; applied to each new filter
        self._intent = self._obs = self._joint = None
        self._instruction = ''
        self._obs_joints = {}     # stamp -> joint vector matched to that observation
        self._chunks, self._chunk_base, self._chunk_key, self._latencies = 0, 0, None, []
        # rtc: the running chunk (normalised, t0, dt) and the last inference time (s)
        self._running, self._infer_s, self._guided = None, 0.0, 0
        self._status, self._reason = None, 'starting'
        self._rejected, self._last_log, self._held = {}, {}, False
        self.create_subscription(Bool, common.TOPIC_ESTOP, self._on_estop, 10)
        self.create_service(SetBool, '~/estop', self._on_estop_srv)
        self._init_takeover()   # ~/take_over: yield the command stream to a teleop source
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._publish_diagnostics)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self.params.autostart:
            self.autostart()

    # --- lifecycle (see lifecycle.ModelNode) ---------------------------------------------
    def configure(self):
        refused = self.load_part('system1')
        if refused:
            return refused
        p = self.params
        if self.policy.model.system1.needs_vlm_features:
            return ('this checkpoint (APT stage 2) needs VLM features that are not sent '
                    'between processes')
        self.policy.noise_scale = p.action_noise_scale
        self.spec = self.policy.embodiment
        self.joint_names = list(self.spec.joint_names)
        self.shape = tuple(self.policy.token_shape)
        self._joint_order = common.JointOrder(self.joint_names)
        self.scheduler = ChunkScheduler(p.chunk_dt_s, self._blend_time(), p.interpolation,
                                        num_joints=len(self.joint_names))
        with self._safety_lock:
            self.safety = SafetyFilter(self._limits(), p.ramp_time_s, stale_timeout_s=1.0,
                                       dry_run=p.dry_run, **self._periods(p.control_rate_hz))
            if self._estop:
                self.safety.estop('latched before configure')
        self.outputs = CommandOutputs(self, self.joint_names, p.output_forms)
        self.chunk_pub = self.create_lifecycle_publisher(ActionChunk, common.TOPIC_CHUNK,
                                                         common.QOS_LATENT)
        # inputs flow while inactive too: activation ramps from a fresh measured pose
        self.subs = [
            self.create_subscription(LatentTensor, common.TOPIC_INTENT, self._on_intent,
                                     common.QOS_LATENT),
            self.create_subscription(LatentTensor, common.TOPIC_OBSERVATION,
                                     self._on_observation, common.QOS_LATENT),
            self.create_subscription(JointState, common.TOPIC_JOINT_STATES,
                                     self._on_joint_state, common.QOS_SENSOR),
            self.create_subscription(JointState, common.TOPIC_OBSERVATION_JOINT_STATE,
                                     self._on_observation_joints, common.QOS_LATENT),
            self.create_subscription(String, common.TOPIC_INSTRUCTION, self._on_instruction,
                                     common.QOS_LATCHED)]
        self.get_logger().info(
            f'configured: model {self.model_id}, {len(self.joint_names)} joints '
            f'({self.spec.name})')

    def activate(self):
        p = self.params
        with self._safety_lock:
            # a fresh start: nothing was commanded while inactive (the world may have been
            # reset or rearranged meanwhile), so ramp in from the measured pose
            self.safety.reset()
            self.scheduler.reset()  # never resume a chunk from before
        self._chunk_key, self._chunk_base = None, self._chunks
        self._status, self._reason = None, 'activating'
        self._active = True
        self.stream = CommandStream(self._tick, p.control_rate_hz, self._on_tick_error,
                                    priority=p.realtime_priority,
                                    logger=self.get_logger())
        self.stream.set_process_priority(p.process_priority)  # threads started later inherit
        self.stream.start()
        # inference on its own thread, woken by observations: a chunk never waits for an
        # executor slot, and a slow chunk never delays the input callbacks
        self._inference = threading.Thread(target=self._infer_loop, name='chunk_inference',
                                           daemon=True)
        self._inference.start()
        self.get_logger().info(
            f'active: commands at {p.control_rate_hz} Hz on {p.output_forms}, a chunk per new '
            f'observation (at most {p.chunk_rate_hz} Hz){" (DRY RUN)" if p.dry_run else ""}')

    def deactivate(self):
        if not self._active:
            return
        with self._infer_lock:
            self._active = False
        self._wake.set()  # wake the inference thread so it sees the stop
        if self._inference is not None:
            self._inference.join(5.0)
        self._inference = None
        if self.stream is not None:
            self.stream.stop()  # joins the thread: no command is sent after this
        self.stream = None
        self._status, self._reason = None, 'inactive'
        self.get_logger().info('inactive: command stream stopped, nothing is commanded (a '
                               'forward controller keeps the last command); activate ramps '
                               'in from the measured pose')

    def release(self):
        for sub in self.subs:
            self.destroy_subscription(sub)
        if self.chunk_pub is not None:
            self.destroy_lifecycle_publisher(self.chunk_pub)
        if self.outputs is not None:
            self.outputs.destroy()
        self.subs, self.chunk_pub, self.outputs = [], None, None
        self._intent = self._obs = self._joint = None
        self._obs_joints = {}
        with self._safety_lock:
            self.scheduler = self.safety = None
        if self.policy is not None:
            device, self.policy, self.model_id = self.policy.device, None, None
            free_memory(device)
            self.get_logger().info('cleaned up: model freed')

    # --- parameters ----------------------------------------------------------------------
    def _limits(self):
        p = self.params
        return SafetyLimits(self.spec.position_lower, self.spec.position_upper,
                            self.spec.velocity_limit * p.velocity_scale, p.max_step_rad)

    def _blend_time(self):
        p = self.params
        return p.rtc_blend_time_s if p.chunk_transition == 'rtc' else p.blend_time_s

    @staticmethod
    def _periods(rate_hz):
        # a late tick earns at most 0.1 s (or one period) of velocity budget
        return {'nominal_period_s': 1.0 / rate_hz, 'max_dt_s': max(0.1, 1.0 / rate_hz)}

    def _on_param(self, name, value):
        # serialised with the lifecycle transitions (both in the default callback group);
        # parts that do not exist yet (unconfigured, inactive) read the parameters when made
        p, stream = self.params, self.stream
        if name in ('checkpoint', 'embodiment', 'seed') and self.policy is not None:
            self.get_logger().info(f'{name}: the model changes at the next configure')
        if name == 'control_rate_hz':
            if stream is not None:
                stream.set_rate(value)
            with self._safety_lock:
                if self.safety is not None:
                    self.safety.set_params(**self._periods(value))
            self.get_logger().info(f'control rate -> {value} Hz')
        elif name == 'realtime_priority' and stream is not None:
            stream.set_priority(value)
        elif name == 'process_priority' and stream is not None:
            stream.set_process_priority(value)
        elif name in ('chunk_dt_s', 'blend_time_s', 'interpolation', 'chunk_transition',
                      'rtc_blend_time_s'):
            if self.scheduler is not None:
                self.scheduler.set_params(dt=p.chunk_dt_s, blend_time_s=self._blend_time(),
                                          interpolation=p.interpolation)
        elif name in ('ramp_time_s', 'dry_run'):
            with self._safety_lock:
                if self.safety is not None:
                    self.safety.set_params(ramp_time_s=p.ramp_time_s, dry_run=p.dry_run)
        elif name in ('velocity_scale', 'max_step_rad') and self.spec is not None:
            limits = self._limits()
            with self._safety_lock:
                if self.safety is not None:
                    self.safety.limits = limits
        elif name == 'output_forms' and self.outputs is not None:
            self.outputs.select(value)
        elif name == 'action_noise_scale' and self.policy is not None:
            self.policy.noise_scale = value

    # --- inputs --------------------------------------------------------------------------
    def _now(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _log_throttled(self, key, text, level='error'):
        """Log at most once per LOG_THROTTLE_S per key (rclpy throttles per call site)."""
        now = time.monotonic()
        if now - self._last_log.get(key, -math.inf) >= LOG_THROTTLE_S:
            self._last_log[key] = now
            # rclpy refuses one call site logging at several severities: one line each
            if level == 'info':
                self.get_logger().info(text)
            elif level == 'warn':
                self.get_logger().warning(text)
            else:
                self.get_logger().error(text)

    def _reject(self, kind, error):
        """Count and log an input that is dropped; it never reaches the command stream.

        Throttled per problem, not per input: a NaN intent does not hide a wrong model id
        that arrives a second later. Numbers are blanked so that one problem whose values
        change (ages, counts) stays one key.
        """
        self._rejected[kind] = self._rejected.get(kind, 0) + 1
        problem = re.sub(r'[-+]?\d[\d.e+-]*', '#', str(error))
        self._log_throttled((kind, problem), f'{kind} dropped: {error} '
                            f'({self._rejected[kind]} dropped so far)')

    def _log_hold(self, status):
        """Log entering and leaving a hold once each (the e-stop logs its own)."""
        held = status.holding and status.state is not SafetyState.ESTOP
        if held == self._held:
            return
        self._held = held
        if held:
            self.get_logger().warning(f'holding the last command: {self._reason}')
        else:
            self.get_logger().info(f'inputs fresh: following the {self.command_source} '
                                   f'again ({status.state.value})')

    def _latent(self, msg):
        tensor = common.read_latent(msg, self.shape)
        if msg.model_id != self.model_id:
            raise ValueError(f'model_id {msg.model_id!r} is not the loaded model '
                             f'{self.model_id!r}')
        stamp = common.stamp_to_sec(msg.header.stamp)
        if stamp <= 0 or stamp > self._now() + FUTURE_TOLERANCE_S:
            raise ValueError(f'header.stamp {stamp:.3f} is zero or in the future')
        return tensor.copy(), stamp

    def _on_intent(self, msg):
        if not msg.valid:  # revoked by its producer: stop following it now, not at valid_for
            if self._intent is not None:
                self._log_throttled('revoked', 'intent revoked by its producer: holding', 'warn')
            self._intent = None
            return
        try:
            tensor, stamp = self._latent(msg)
            if not (math.isfinite(msg.valid_for) and msg.valid_for >= 0):
                raise ValueError(f'valid_for {msg.valid_for} must be finite and >= 0')
            want = self._instruction
            if want and msg.instruction_id and msg.instruction_id != want:
                raise ValueError(f'computed for instruction {msg.instruction_id}, the '
                                 f'current one is {want}')
        except ValueError as err:
            return self._reject('intent', err)
        expires = stamp + msg.valid_for if msg.valid_for > 0 else math.inf
        self._intent = _Input(tensor, stamp, expires, (stamp, msg.seq), msg.header.stamp)
        # an observation that came before any fresh intent gets its chunk now (a frame that
        # already has one is not due again: chunking.frame_due)
        self._wake.set()

    def _on_observation(self, msg):
        try:
            tensor, stamp = self._latent(msg)
        except ValueError as err:
            return self._reject('observation', err)
        # the newest arrival, even if the clock went back
        self._obs = _Input(tensor, stamp, stamp_msg=msg.header.stamp)
        self._wake.set()

    def _joints(self, msg):
        """Return (positions in embodiment order, stamp) of a JointState; ValueError if bad."""
        q = self._joint_order.positions(msg)
        stamp = common.stamp_to_sec(msg.header.stamp)
        if stamp > self._now() + FUTURE_TOLERANCE_S:
            raise ValueError(f'header.stamp {stamp:.3f} is in the future')
        return q, stamp

    def _on_joint_state(self, msg):
        try:
            q, stamp = self._joints(msg)
        except ValueError as err:
            return self._reject('joint_state', err)
        self._joint = _Input(q, stamp if stamp > 0 else self._now())

    def _on_observation_joints(self, msg):
        # perception's joint state matched to an observation: the model's state input
        try:
            q, stamp = self._joints(msg)
        except ValueError as err:
            return self._reject('observation_joint_state', err)
        self._obs_joints = {k: v for k, v in self._obs_joints.items() if k > stamp - 2.0}
        self._obs_joints[stamp] = q

    def _on_instruction(self, msg):
        self._instruction = common.instruction_id(msg.data) if msg.data.strip() else ''

    def _on_estop(self, msg):
        self._set_estop(bool(msg.data), 'topic ' + common.TOPIC_ESTOP)

    def _on_estop_srv(self, request, response):
        self._set_estop(bool(request.data), 'service ~/estop')
        response.success = True
        response.message = 'e-stop latched' if request.data else 'e-stop released'
        return response

    def _set_estop(self, stop, source):
        with self._safety_lock:
            was, self._estop = self._estop, stop
            if self.safety is not None:
                if stop:
                    self.safety.estop(source)
                    self.scheduler.reset()  # never resume an old chunk after a release
                elif was:
                    self.safety.release()
        if stop and not was:
            self.get_logger().warning(f'e-stop latched by {source}: holding')
        elif was and not stop:
            self.get_logger().info(f'e-stop released by {source}: ramping from the pose')

    def _stale(self, now):
        """Return why the inputs cannot be followed now ('' when all are fresh)."""
        p = self.params
        checks = (('intent', self._intent, p.intent_timeout_s),
                  ('observation', self._obs, p.observation_timeout_s),
                  ('joint_state', self._joint, p.joint_state_timeout_s))
        for name, value, timeout in checks:
            if value is None:
                return f'no {name} (none yet, or revoked)'
            age = now - value.stamp
            if age > timeout or now > value.expires:
                return f'{name} stale ({age:.2f} s old, timeout {timeout:.2f} s)'
        return ''

    # --- chunk inference (its own thread) -----------------------------------------------
    def _infer_loop(self):
        """Compute a chunk for each new observation until deactivated."""
        while self._active:
            if not self._wake.wait(IDLE_WAIT_S):
                continue
            self._wake.clear()  # an observation arriving from here on wakes us again
            with self._infer_lock:
                if not self._active:
                    return
                try:
                    self._infer_chunk()
                except Exception as err:  # noqa: BLE001 - keep serving the next frames
                    if not self.context.ok():
                        return  # Ctrl-C shut the context down: close() stops this thread
                    self._reject('chunk', f'{type(err).__name__}: {err}')

    def _infer_chunk(self):
        if self.yielded:
            return  # the teleop source drives: chunks stay idle until the hand-back
        now = self._now()
        intent, obs, joint = self._intent, self._obs, self._joint
        if self._stale(now) or (obs.stamp, intent.key) == self._chunk_key:
            return  # nothing new to condition on; the stream holds or follows the last chunk
        if not frame_due(self._chunk_key and self._chunk_key[0], obs.stamp,
                         self.params.chunk_rate_hz):
            return  # the chunk_rate_hz bound: skip this frame, a later one will be used
        if self.scheduler.t0 is not None and obs.stamp < self.scheduler.t0 - JUMP_BACK_S:
            self.get_logger().warning('time jumped back (sim or bag restart): old chunk dropped')
            self.scheduler.reset()
        start = time.perf_counter()
        try:
            state = self._obs_joints.get(obs.stamp, joint.value)
            guidance = self._rtc_guidance(now, obs.stamp)
            raw = self.policy.act_normalized(obs.value, intent.value, state,
                                             seed=self.params.seed + self._chunks, **guidance)
            chunk = self.policy.joint_targets(raw)
            self.scheduler.push(chunk, obs.stamp, self._now(), dt=self.params.chunk_dt_s)
        except ValueError as err:
            return self._reject('chunk', err)
        self._infer_s = time.perf_counter() - start
        if self.scheduler.last_skipped >= len(chunk):
            return self._reject('chunk', f'entirely in the past ({now - obs.stamp:.2f} s after '
                                f'its observation)')
        self._running = (raw, obs.stamp, self.params.chunk_dt_s)
        self._guided += bool(guidance)
        self._latencies.append(self._infer_s)
        self._chunks += 1
        self._chunk_key = (obs.stamp, intent.key)
        msg = ActionChunk(joint_names=self.joint_names, horizon=len(chunk),
                          dt=self.params.chunk_dt_s, model_id=self.model_id)
        # the inputs' exact stamps: a chunk matches its observation by equality
        msg.header.stamp = _copy_stamp(obs.stamp_msg)
        msg.observation_stamp = _copy_stamp(obs.stamp_msg)
        msg.latent_stamp = _copy_stamp(intent.stamp_msg)
        msg.positions = array.array('d', np.ascontiguousarray(chunk, np.float64).tobytes())
        self.chunk_pub.publish(msg)

    def _rtc_guidance(self, now, t0):
        """act() keywords that guide the new chunk towards the running one (rtc), or {}."""
        p, running = self.params, self._running
        # none after a reset (activation, e-stop, clock jump): the scheduler forgot it too
        if p.chunk_transition != 'rtc' or running is None or running[1] != self.scheduler.t0:
            return {}
        raw, t0_running, dt = running
        # waypoints due before this chunk can be pushed: the running chunk executes them
        delay = p.rtc_delay_steps or math.ceil((now - t0 + self._infer_s) / dt)
        target, weights = resample_prefix(raw, t0_running, t0, dt, len(raw), delay,
                                          p.interpolation)
        return {'prefix': target, 'prefix_weights': weights,
                'max_guidance': p.rtc_max_guidance}

    # --- command stream (its own thread) -------------------------------------------------
    def _tick(self):
        if not self._active:  # deactivating: the stream is being stopped
            return
        now = self._now()
        joint = self._joint
        if self.yielded:
            target, reason = self._teleop_target(now, joint)
        else:
            reason = self._stale(now)
            target = None if reason else self.scheduler.sample(now)
            if target is None and not reason:
                reason = 'no chunk covers now'
        if (target is None and not self.yielded and self._chunks == self._chunk_base
                and not self.params.hold_on_start):
            self._reason = reason + ' (hold_on_start false: sending nothing)'
            return
        with self._safety_lock:
            cmd, status = self.safety.filter(target, None if joint is None else joint.value,
                                             now, 0.0)
        self._status, self._reason = status, reason or status.reason
        self._log_hold(status)
        if cmd is None:
            return
        if status.send:
            self.outputs.publish(cmd, now, self.stream.period_s)
        elif self.params.dry_run:
            self._log_throttled('dry_run', f'dry_run: would command '
                                f'{np.round(cmd[:4], 3).tolist()}... ({status.state.value})',
                                'info')

    def _on_tick_error(self, err):
        if not self.context.ok():
            # Ctrl-C shut the context down before close() stopped the stream: nothing can
            # be published any more, and close() is about to stop this thread
            return
        self._reject('tick', f'{type(err).__name__}: {err} (holding)')

    # --- diagnostics ---------------------------------------------------------------------
    def _publish_diagnostics(self):
        lifecycle = self.lifecycle_state
        values = {'state': lifecycle, 'estop': self._estop, 'chunks': self._chunks,
                  'chunks_guided': self._guided,
                  'model_id': self.model_id or '',
                  'commands_sent': 0 if self.outputs is None else self.outputs.sent}
        self._takeover_diagnostics(values, self._now())
        if lifecycle != 'active':  # nothing is commanded
            self.diagnostics.publish('error' if self._estop else 'ok', lifecycle, values)
            return
        now = self._now()
        lat, self._latencies = np.array(self._latencies) * 1e3, []
        status = self._status
        state = 'waiting' if status is None else status.state.value
        values.update({'safety_state': state, 'reason': self._reason,
                       'dry_run': self.params.dry_run})
        values.update(self.stream.diagnostic_values())
        nan = float('nan')
        values.update(chunk_inference_ms_p50=float(np.median(lat)) if lat.size else nan,
                      chunk_inference_ms_max=float(lat.max()) if lat.size else nan,
                      chunks_in_window=int(lat.size),
                      # observation -> chunk in the scheduler; that many waypoints were past
                      chunk_latency_s=self.scheduler.last_latency_s or nan,
                      chunk_skipped_steps=self.scheduler.last_skipped)
        for name, value in (('intent', self._intent), ('observation', self._obs),
                            ('joint_state', self._joint)):
            values[f'age_{name}_s'] = nan if value is None else now - value.stamp
        for kind, count in sorted(self._rejected.items()):
            values[f'dropped_{kind}'] = count
        level = 'ok'
        if self._estop:
            level = 'error'
        elif (status is None or status.holding or self.params.dry_run
              or values['send_missed_ticks']
              or values['send_achieved_hz'] < 0.9 * values['send_target_hz']):
            level = 'warn'
        message = state if state in ('ok', 'ramping') else f'{state}: {self._reason}'
        if self.yielded:
            message = f'teleop drives ({message})'
        self.diagnostics.publish(level, message, values)


def _copy_stamp(stamp):
    """A copy of a builtin_interfaces/Time."""
    return type(stamp)(sec=stamp.sec, nanosec=stamp.nanosec)


def main(args=None):
    # one executor thread: inference and the command stream have threads of their own, and
    # rclpy's MultiThreadedExecutor spun a FIFO-priority core at ~45 % beside the command
    # thread (see common.run_node), starving perception and the sim
    return common.run_node(ControllerNode, args)


if __name__ == '__main__':
    sys.exit(main())
