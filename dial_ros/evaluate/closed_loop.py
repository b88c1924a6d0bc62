"""Fast closed-loop evaluation in one process: the embedded sim and the policy, no ROS.

    python -m dial_ros.evaluate.fast --checkpoint CKPT --episodes 50 --split seen

For iteration (ablations, checkpoint selection); the reported numbers come from
``python -m dial_ros.evaluate`` through the ROS stack. What it reproduces of that stack:

* the same core objects as the controller node: ``ChunkScheduler`` (absolute-time chunks,
  skipped stale waypoints, cubic upsampling, cross-fades) and ``SafetyFilter`` (limits,
  velocity and step limits, the ramp from the measured pose, hold on stale input), built
  from the controller's section of ``config/humanoid.yaml``;
* the stack's clocks: the sim steps every 50 ms and stamps its frame after stepping,
  perception encodes each frame (ViT), the intent node runs System-2 on the newest
  observation at ``intent_rate_hz``, the controller runs System-1 as each frame arrives
  (at most ``chunk_rate_hz``, see ``chunking.frame_due``) on it, the newest intent and the
  joint state of that frame, and its command
  stream samples the chunk at ``control_rate_hz``; the sim applies the newest command at
  its next step. Timer phases are drawn per episode; the delays (``StackTiming``) are the
  ones measured in the launch (``bench.e2e_latency``);
* the evaluation's episode: the controller released after a reset (ramping in from the
  measured pose), success = the lift held for 1 s, task completion in thirds, the timeout.

``timing='sync'`` is the paper's synchronous loop instead: every ``replan_steps`` steps a
chunk from the current frame and a fresh intent, its waypoints applied one per step.
Each episode also records the palm's closest approach to the cube (see ``reach``).
"""
import dataclasses
import math
import pathlib
import time

import numpy as np
import yaml

from dial_ros import paths
from dial_ros.core.chunking import ChunkScheduler, frame_due
from dial_ros.core.safety import SafetyFilter, SafetyLimits
from dial_ros.sim.gr1_env import GRASP_POINT

PARAMS_FILE = paths.config_file('humanoid.yaml')
# the instruction the humanoid launch runs: config/humanoid.yaml's intent.instruction (a test
# keeps the two equal)
DEFAULT_INSTRUCTION = 'pick up the cube and lift it'


@dataclasses.dataclass
class StackTiming:
    """Delays of the ROS stack between a sim step and what it causes (seconds)."""

    frame_stamp_s: float = 0.003   # sim node: physics before the step is stamped
    perception_s: float = 0.015    # stamp -> render, transport, ViT: latent at the controller
    intent_s: float = 0.005        # System-2 compute + transport
    chunk_s: float = 0.009         # System-1 compute (bundled checkpoint, one thread)


@dataclasses.dataclass
class ControllerSettings:
    """The controller and intent parameters that shape the command stream."""

    control_rate_hz: float = 200.0
    chunk_rate_hz: float = 10.0
    chunk_dt_s: float = 0.05
    intent_rate_hz: float = 5.0
    intent_valid_for_s: float = 1.0
    intent_timeout_s: float = 1.0
    observation_timeout_s: float = 0.5
    joint_state_timeout_s: float = 0.2
    ramp_time_s: float = 1.0
    max_step_rad: float = 0.02
    velocity_scale: float = 0.5
    blend_time_s: float = 0.1
    interpolation: str = 'cubic'
    action_noise_scale: float = 1.0

    @classmethod
    def from_params_file(cls, path=PARAMS_FILE):
        """The deployed values: the controller and intent sections of the launch's file."""
        data = yaml.safe_load(pathlib.Path(path).read_text())
        ctrl = data['controller']['ros__parameters']
        intent = data['intent']['ros__parameters']
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in ctrl.items() if k in fields}
        values.update(intent_rate_hz=intent['intent_rate_hz'],
                      intent_valid_for_s=intent['valid_for_s'])
        return cls(**values)


@dataclasses.dataclass
class Episode:
    """One closed-loop episode and what it measured (JSON-ready via ``dataclasses.asdict``)."""

    split: str
    episode: int
    seed: int
    success: bool
    completion_s: float       # sim time of the lift that held (None: no success)
    progress: float           # furthest milestone in thirds
    duration_s: float         # sim time until success was judged or the timeout
    closest_cm: float         # palm grasp point to cube centre, closest before any raise
    palm_at_closest: list     # world xyz of the palm grasp point then (m)
    cube_start: list          # world xyz of the cube at the reset (m)
    wall_s: float


class _Tracker:
    """Closest approach of the palm to the cube, before the cube leaves the table."""

    def __init__(self, sim):
        self.sim = sim
        self.start = sim.cube_pose()[0]
        self.best, self.palm, self.progress = math.inf, self.start * 0.0, 0.0

    def update(self):
        sim = self.sim
        d = sim.data
        site = sim.model.site('robot0_r_wrist_site').id
        palm = d.site_xpos[site] + d.site_xmat[site].reshape(3, 3) @ np.asarray(GRASP_POINT)
        cube = sim.cube_pose()[0]
        if cube[2] < self.start[2] + 0.01:  # after a raise the palm follows the cube
            dist = float(np.linalg.norm(palm - cube))
            if dist < self.best:
                self.best, self.palm = dist, palm.copy()
        self.progress = max(self.progress, sim.progress())


class ClosedLoop:
    """Runs episodes of ``policy`` (a DialPolicy) on ``sim`` (a GR1Sim with its camera)."""

    def __init__(self, sim, policy, settings=None, timing=None, mode='ros', replan_steps=2,
                 instruction=DEFAULT_INSTRUCTION, timeout_s=15.0, chunk_seed=0):
        if mode not in ('ros', 'sync'):
            raise ValueError(f"mode: {mode!r} is not 'ros' or 'sync'")
        if list(policy.joint_names) != list(sim.joint_names):
            raise ValueError('policy: its embodiment joints are not the sim joints')
        self.sim, self.policy = sim, policy
        self.settings = settings or ControllerSettings.from_params_file()
        self.timing = timing or StackTiming()
        self.mode, self.replan_steps = mode, replan_steps
        self.instruction, self.timeout_s = instruction, timeout_s
        self.chunk_seed = chunk_seed
        s = self.settings
        spec = policy.embodiment
        self.limits = SafetyLimits(spec.position_lower, spec.position_upper,
                                   spec.velocity_limit * s.velocity_scale, s.max_step_rad)
        self._chunks = 0
        model = getattr(policy, 'model', None)   # test stubs have none
        self._needs_features = model is not None and model.system1.needs_vlm_features
        policy.noise_scale = self.settings.action_noise_scale

    # --- the models, as the nodes call them ------------------------------------------------
    def _intent(self, tokens):
        # an APT stage-2 model also needs the LLM features of the same observation; the
        # intent node does not publish them, so such a model runs here and not in the stack
        if self._needs_features:
            return self.policy.foresee(tokens, self.instruction, return_features=True)
        return self.policy.foresee(tokens, self.instruction), ()

    def _chunk(self, tokens, intent, joints):
        self._chunks += 1
        intent, features = intent
        extra = {'features': features} if self._needs_features else {}
        return self.policy.act(tokens, intent, joints, seed=self.chunk_seed + self._chunks,
                               **extra)

    # --- episodes --------------------------------------------------------------------------
    def run(self, split, episode, seed, task=None):
        """One episode from ``sim.reset(seed, task)``; returns an :class:`Episode`."""
        tic = time.monotonic()
        obs = self.sim.reset(seed=seed, task=task)
        tracker = _Tracker(self.sim)
        rng = np.random.default_rng(seed)
        run = self._run_ros if self.mode == 'ros' else self._run_sync
        success_at, duration = run(obs, tracker, rng)
        return Episode(split, episode, seed, success_at is not None, success_at,
                       1.0 if success_at is not None else round(tracker.progress, 4),
                       round(duration, 3), round(100 * tracker.best, 2),
                       [round(float(v), 4) for v in tracker.palm],
                       [round(float(v), 4) for v in tracker.start],
                       round(time.monotonic() - tic, 2))

    def _step(self, command, tracker):
        obs = self.sim.step(command)
        tracker.update()
        if self.sim.held_success():
            return obs, self.sim.lifted_since()
        return obs, None

    def _run_sync(self, obs, tracker, rng):
        """Synchronous loop: a chunk every ``replan_steps`` steps, one waypoint per step."""
        steps = int(round(self.timeout_s / self.sim.control_dt))
        chunk, used = None, 0
        for k in range(steps):
            if chunk is None or used >= min(self.replan_steps, len(chunk)):
                tokens = self.policy.encode_frame(obs['image'])
                chunk = self._chunk(tokens, self._intent(tokens), obs['joint_positions'])
                used = 0
            command = np.clip(chunk[used], self.limits.lower, self.limits.upper)
            used += 1
            obs, success_at = self._step(command, tracker)
            if success_at is not None:
                return success_at, obs['time']
        return None, obs['time']

    def _run_ros(self, obs, tracker, rng):
        """The stack's clocks (see the module docstring); time 0 = the controller's release."""
        s, t, period = self.settings, self.timing, self.sim.control_dt
        scheduler = ChunkScheduler(s.chunk_dt_s, s.blend_time_s, s.interpolation,
                                   num_joints=len(self.sim.joint_names))
        safety = SafetyFilter(self.limits, s.ramp_time_s, stale_timeout_s=1.0,
                              nominal_period_s=1.0 / s.control_rate_hz,
                              max_dt_s=max(0.1, 1.0 / s.control_rate_hz))
        t0_sim = obs['time']
        # the frame of the reset, seen during the evaluation's settle time: observation and
        # intent exist at the release, as they do after the settle in the ROS evaluation
        tokens = self.policy.encode_frame(obs['image'])
        frame = (t.frame_stamp_s - period, tokens, obs['joint_positions'])
        intent = (frame[0], self._intent(tokens))
        pending = []  # (ready time, kind, payload) of observations, intents and chunks
        joint = (frame[0], obs['joint_positions'])
        chunk_key, command = None, None
        intent_tick = rng.uniform(0.0, 1.0 / s.intent_rate_hz)
        tick = rng.uniform(0.0, 1.0 / s.control_rate_hz)
        steps = int(round(self.timeout_s / period))
        intent_timeout = min(s.intent_timeout_s, s.intent_valid_for_s)

        def stale(now):   # the controller's _stale: any input too old to follow
            return (now - intent[0] > intent_timeout or now - frame[0] > s.observation_timeout_s
                    or now - joint[0] > s.joint_state_timeout_s)

        for k in range(steps):
            step_at = k * period
            # everything that happens before this step's start, in time order
            while True:
                due = min([tick, intent_tick] + [p[0] for p in pending])
                if due >= step_at:
                    break
                if pending and due == min(p[0] for p in pending):
                    ready = min(pending, key=lambda p: p[0])
                    pending.remove(ready)
                    if ready[1] == 'frame':
                        frame = ready[2]
                        # the controller: a chunk as each frame arrives, at most chunk_rate_hz
                        last = None if chunk_key is None else chunk_key[0]
                        if not stale(due) and frame_due(last, frame[0], s.chunk_rate_hz):
                            chunk_key = (frame[0], intent[0])
                            chunk = self._chunk(frame[1], intent[1], frame[2])
                            pending.append((due + t.chunk_s, 'chunk', (frame[0], chunk)))
                    elif ready[1] == 'intent':
                        intent = ready[2]
                    else:
                        stamp, chunk = ready[2]
                        scheduler.push(chunk, stamp, due, dt=s.chunk_dt_s)
                elif due == intent_tick:
                    pending.append((due + t.intent_s, 'intent',
                                    (frame[0], self._intent(frame[1]))))
                    intent_tick += 1.0 / s.intent_rate_hz
                else:
                    target = None if stale(tick) else scheduler.sample(tick)
                    out, _ = safety.filter(target, joint[1], tick, 0.0)
                    command = out if out is not None else command
                    tick += 1.0 / s.control_rate_hz
            obs, success_at = self._step(self.sim.targets if command is None else command,
                                         tracker)
            if success_at is not None:
                return success_at - t0_sim, obs['time'] - t0_sim
            stamp = step_at + t.frame_stamp_s  # the frame after this step
            joint = (stamp, obs['joint_positions'])
            pending.append((stamp + t.perception_s, 'frame',
                            (stamp, self.policy.encode_frame(obs['image']),
                             obs['joint_positions'])))
        return None, obs['time'] - t0_sim
