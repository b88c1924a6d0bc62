"""Scripted expert for GR1Sim's Lift task: closed-loop IK on a grasp-point plan, DART noise.

What it uses is what a teleoperator has: the robot's joint readings, a kinematic model of the
robot (the sim's MjModel, on a private MjData, for inverse kinematics) and the cube pose,
which it reads from the simulator's state (``GR1Sim.cube_pose``, privileged) as a stand-in
for the operator's eyes. It never writes to the simulation; its only output is the 32-D
joint target vector.

Phases (control steps at 20 Hz): reach a pre-grasp point 10 cm back from the cube along
the palm normal (30) -> descend onto the cube (20) -> close the hand (15) -> squeeze (5)
-> lift 20 cm (30) -> hold. The grasp point (in the palm, 8.5 cm ahead of the right wrist)
moves on straight lines; every step solves damped-least-squares IK over the waist (3) and
right arm (7) for it and a fixed hand orientation (palm down-inwards, fingers pitched down
15 deg, turned to square up with the cube's yaw).

Closed loop (``closed_loop=True``, the default) it re-plans every step from what it
measures: the IK starts from the measured joints (so its targets are a function of the
robot's state, not of its own history), and while reaching and descending the goal follows
the cube's current pose (a nudged cube is followed). After the lift it checks the cube: a
missed or dropped grasp is retried (open the hand and rise, then reach again, up to
``max_retries``). Open loop (``closed_loop=False``) it follows its own targets after the
first step, as the first version of this expert did.

``CommandNoise`` is DART-style noise injection (Laskey et al. 2017) for recording: the
robot executes ``label + noise`` (temporally correlated noise on the waist and right arm)
while the recording keeps the expert's clean target as the label, so the demonstrations
show how the expert corrects the errors that a learned policy will make.
Measured: ``python -m dial_ros.sim.expert --episodes 100 --no-render`` (see README).
"""
import logging
import math

import mujoco
import numpy as np

from dial_ros.sim.gr1_env import (GRASP_POINT, INIT_POSITIONS, JOINT_NAMES, N_BODY,
                                  SUCCESS_HOLD_S)

IK_JOINTS = ('torso_waist_yaw', 'torso_waist_pitch', 'torso_waist_roll') + tuple(
    'r_' + j for j in ('shoulder_pitch', 'shoulder_roll', 'shoulder_yaw', 'elbow_pitch',
                       'wrist_yaw', 'wrist_roll', 'wrist_pitch'))
LOG = logging.getLogger(__name__)
RIGHT_HAND = slice(N_BODY, N_BODY + 6)
WRIST_SITE = 'robot0_r_wrist_site'
WRIST_BODY = 'robot0_r_hand_pitch'


def _rot(axis, angle):
    """Rotation matrix about a unit world axis."""
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, float), angle)
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def _rot_error(target, current):
    """Axis-angle vector (world frame) rotating ``current`` onto ``target``."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).ravel())
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


class ScriptedExpert:
    """Reach, descend, close, squeeze, lift (and retry a missed grasp): a right-hand grasp.

    The grasp point is fixed in the wrist frame (``grasp_point``: x towards the thumb,
    y out of the palm, z back along the forearm, so fingers point to -z). The hand
    orientation is the nominal wrist frame (fingers forward, thumb up, palm inwards)
    rolled about the forearm by ``hand_roll_deg``, pitched down by ``hand_pitch_deg`` and,
    with ``align_yaw``, turned about the vertical to square up with the cube. Each phase
    moves the grasp point along a straight line from where the last phase's targets put it.

    ``align_yaw`` is off by default: the grasp works without it (80/80 episodes, seeds
    100000-100079, against 79/80 with it) and it makes the demonstrations depend on the
    cube's yaw, which the frozen tiny ViT does not show (a ridge probe on the start frame's
    tokens: R^2 0.91-0.95 for the cube's x and y, below 0 for its yaw modulo 90 deg), so a
    policy can only learn the average wrist turn from such demonstrations.
    """

    PHASES = (('reach', 30), ('descend', 20), ('close', 15), ('squeeze', 5), ('lift', 30))
    RETRY_PHASES = (('retreat', 15),)   # then PHASES again, re-planned from the cube
    REPLAN_PHASES = ('reach', 'descend')
    LIFTED_MARGIN = 0.06   # a grasp holds when the cube rose this far during the lift (m)
    TYPICAL_REACH_M = 0.20  # grasp point at the reset -> pre-grasp (measured 0.19-0.21 m)

    def __init__(self, sim, grasp_point=GRASP_POINT, approach=0.10, lift_height=0.20,
                 hand_pitch_deg=15.0, hand_roll_deg=-70.0, align_yaw=False,
                 open_hand=(0.0, 0.0, 0.0, 0.0, 0.0, 1.3),
                 closed_hand=(1.5, 1.5, 1.5, 1.5, 1.0, 1.3), closed_loop=True,
                 max_retries=2, retreat_height=0.08):
        """Bind to ``sim`` (a GR1Sim); the keyword arguments tune the grasp geometry."""
        self.sim = sim
        self.grasp_point = np.asarray(grasp_point, float)
        self.approach = approach
        self.lift_height = lift_height
        self.align_yaw = align_yaw
        self.open_hand = np.asarray(open_hand, float)
        self.closed_hand = np.asarray(closed_hand, float)
        self.closed_loop = closed_loop
        self.max_retries = max_retries
        self.retreat_height = retreat_height
        m = sim.model
        self._ik_data = mujoco.MjData(m)
        names = list(JOINT_NAMES)
        self._ik_cols = np.array([names.index(n) for n in IK_JOINTS])
        joints = [m.joint('robot0_' + n) for n in IK_JOINTS]
        self._ik_dadr = np.array([j.dofadr[0] for j in joints])
        self._body_qadr = np.array([m.joint('robot0_' + n).qposadr[0]
                                    for n in JOINT_NAMES[:N_BODY]])
        self._lower, self._upper = sim.joint_limits
        self._site = m.site(WRIST_SITE).id
        self._body = m.body(WRIST_BODY).id
        nominal = self._forward(INIT_POSITIONS[:N_BODY])[1]
        pitch = _rot([0.0, 1.0, 0.0], math.radians(hand_pitch_deg))
        roll = _rot([1.0, 0.0, 0.0], math.radians(hand_roll_deg))
        self.base_orientation = pitch @ roll @ nominal
        self.hand_orientation = self.base_orientation
        self._velocity_step = sim.velocity_limits * sim.control_dt
        self.done = True
        self.phase = 'idle'
        self.retries = 0

    # ----------------------------------------------------------------- kinematics
    def _forward(self, body_q):
        """Wrist site position and orientation for body joint positions (20,)."""
        d = self._ik_data
        d.qpos[self._body_qadr] = body_q
        mujoco.mj_kinematics(self.sim.model, d)
        return d.site_xpos[self._site].copy(), d.site_xmat[self._site].reshape(3, 3).copy()

    def grasp_position(self, targets):
        """World position of the grasp point for joint targets (32,)."""
        pos, rot = self._forward(targets[:N_BODY])
        return pos + rot @ self.grasp_point

    def solve_ik(self, start, point, iterations=100, damping=0.05, rot_weight=0.5):
        """Joint targets (32,) putting the grasp point at ``point`` with the hand orientation.

        Only the waist and right-arm entries of ``start`` change. Returns (targets,
        position error in m, orientation error in rad).
        """
        m, d = self.sim.model, self._ik_data
        q = np.array(start, float)
        body = q[:N_BODY]
        lower, upper = self._lower[self._ik_cols], self._upper[self._ik_cols]
        weights = np.array([0.3, 0.3, 0.3] + [1.0] * 7)
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        for _ in range(iterations):
            pos, rot = self._forward(body)
            here = pos + rot @ self.grasp_point
            err = np.concatenate([point - here,
                                  rot_weight * _rot_error(self.hand_orientation, rot)])
            if np.linalg.norm(err[:3]) < 5e-4 and np.linalg.norm(err[3:]) < 5e-3:
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jac(m, d, jacp, jacr, here, self._body)
            jac = np.vstack([jacp[:, self._ik_dadr], rot_weight * jacr[:, self._ik_dadr]])
            jw = jac * weights
            dq = weights * (jw.T @ np.linalg.solve(jw @ jw.T + damping ** 2 * np.eye(6), err))
            body[self._ik_cols] = np.clip(body[self._ik_cols] + np.clip(dq, -0.2, 0.2),
                                          lower, upper)
        pos, rot = self._forward(body)
        pos_err = float(np.linalg.norm(point - (pos + rot @ self.grasp_point)))
        rot_err = float(np.linalg.norm(_rot_error(self.hand_orientation, rot)))
        q[:N_BODY] = body
        return q, pos_err, rot_err

    # ----------------------------------------------------------------- plan
    def _plan_from_cube(self):
        """Grasp, pre-grasp and lift points and the hand orientation from the cube pose."""
        cube_pos, cube_quat = self.sim.cube_pose()
        if self.align_yaw:
            yaw = 2.0 * math.atan2(cube_quat[3], cube_quat[0])
            turn = (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
            if self._turn is not None:  # a re-plan keeps the hand's side of the square
                turn += math.pi / 2 * round((self._turn - turn) / (math.pi / 2))
            self._turn = turn
            self.hand_orientation = _rot([0.0, 0.0, 1.0], turn) @ self.base_orientation
        palm_normal = self.hand_orientation[:, 1]
        self._grasp = cube_pos.copy()
        self._pregrasp = cube_pos - self.approach * palm_normal
        self._lifted = cube_pos + [0.0, 0.0, self.lift_height]
        self._cube_z = float(cube_pos[2])

    def _goal(self):
        """Where the grasp point should be at the end of the current phase (None: stay)."""
        return {'reach': self._pregrasp, 'descend': self._grasp, 'lift': self._lifted,
                'retreat': self._line[0] + [0.0, 0.0, self.retreat_height]}.get(self.phase)

    def _hand_goal(self):
        return self.open_hand if self.phase in ('reach', 'descend', 'retreat') \
            else self.closed_hand

    # ----------------------------------------------------------------- episode
    def reset(self, obs):
        """Plan from the first observation of an episode (reads the cube pose from the sim)."""
        self.done, self.retries = False, 0
        self._targets = np.clip(obs['joint_positions'], self._lower, self._upper)
        self.hand_orientation, self._turn = self.base_orientation, None
        self._plan_from_cube()
        self._queue = list(self.PHASES)
        self._next_phase()

    def take_over(self, obs):
        """Start from any state, e.g. where a learned policy left the robot (DAgger).

        The phases come from what is measured, not from a clock: a closed hand near a
        raised cube lifts; a closed hand at the grasp point squeezes and lifts; a closed
        hand anywhere else opens and retreats, then re-plans (the retry path); an open hand
        on the approach line (behind the cube along the palm normal, within 2.5 cm of it)
        descends; an open hand elsewhere reaches the pre-grasp point. Reach and descend
        take as many steps as the distance needs at the speed of a full demonstration.
        """
        self.done, self.retries = False, 0
        self._targets = np.clip(obs['joint_positions'], self._lower, self._upper)
        self.hand_orientation, self._turn = self.base_orientation, None
        self._plan_from_cube()
        self._cube_z = float(self.sim.cube_rest_z)   # the cube may be off the table already
        self._queue = self._phases_from_state()
        self._next_phase()

    def hand_closure(self, joints):
        """How far the right hand's fingers are from open (0) to closed (1)."""
        span = self.closed_hand[:5] - self.open_hand[:5]
        return float(np.mean((np.asarray(joints)[RIGHT_HAND][:5] - self.open_hand[:5]) / span))

    def _phases_from_state(self):
        phases = dict(self.PHASES)
        here = self.grasp_position(self._targets)
        cube = self.sim.cube_pose()[0]
        to_cube = float(np.linalg.norm(here - cube))
        if self.hand_closure(self._targets) > 0.5:
            if cube[2] > self._cube_z + 0.01 and to_cube < 0.04:
                return [('lift', phases['lift'])]
            if to_cube < 0.02:
                return [('squeeze', phases['squeeze']), ('lift', phases['lift'])]
            return list(self.RETRY_PHASES) + [('replan', 0)] + list(self.PHASES)
        normal = self.hand_orientation[:, 1]
        offset = here - self._grasp
        back = -float(offset @ normal)           # distance behind the cube along the approach
        lateral = float(np.linalg.norm(offset + back * normal))
        rest = list(self.PHASES[2:])
        if -0.01 <= back <= self.approach + 0.02 and lateral < 0.025:
            return [('descend', self._steps_for(max(back, 0.0), 'descend', self.approach))] + rest
        reach = float(np.linalg.norm(here - self._pregrasp))
        return [('reach', self._steps_for(reach, 'reach', self.TYPICAL_REACH_M)),
                ('descend', phases['descend'])] + rest

    def _steps_for(self, distance, phase, full_distance):
        """Steps to move ``distance`` at the pace a full ``phase`` of ``full_distance`` has."""
        full = dict(self.PHASES)[phase]
        return int(np.clip(math.ceil(full * distance / full_distance), 5, full))

    def _grasp_failed(self):
        """After the lift: is the cube still near the table (a missed or dropped grasp)?"""
        return self.sim.cube_pose()[0][2] < self._cube_z + self.LIFTED_MARGIN

    def _next_phase(self):
        """Advance to the next phase: a straight grasp-point line and a hand posture."""
        if not self._queue:
            if self.closed_loop and self.retries < self.max_retries and self._grasp_failed():
                self.retries += 1
                LOG.info('expert: grasp missed, retry %d', self.retries)
                self._queue = list(self.RETRY_PHASES) + [('replan', 0)] + list(self.PHASES)
            else:
                self.phase, self.done = 'hold', True
                return
        self.phase, self._steps = self._queue.pop(0)
        if self.phase == 'replan':
            self._plan_from_cube()
            return self._next_phase()
        self._step = 0
        start = self.grasp_position(self._targets)
        self._line = (start, start)
        goal = self._goal()
        self._line = (start, start if goal is None else goal)
        self._hands = (self._targets[RIGHT_HAND].copy(), self._hand_goal())

    def act(self, obs=None):
        """Return the joint targets (32,) for this control step.

        ``obs['joint_positions']`` (the measured joints) is used when closed loop; without
        it (or open loop) the IK starts from the previous targets.
        """
        measured = None if obs is None else obs.get('joint_positions')
        if not self.done and self._step >= self._steps:
            self._next_phase()
        if self.done:
            return self._targets.copy()
        self._step += 1
        alpha = self._step / self._steps
        if self.closed_loop and self.phase in self.REPLAN_PHASES:
            self._plan_from_cube()
            self._line = (self._line[0], self._goal())
        point = (1.0 - alpha) * self._line[0] + alpha * self._line[1]
        start = self._targets.copy()
        if self.closed_loop and measured is not None:
            start[self._ik_cols] = np.asarray(measured)[self._ik_cols]
        wanted, _, _ = self.solve_ik(start, point)
        wanted[RIGHT_HAND] = (1.0 - alpha) * self._hands[0] + alpha * self._hands[1]
        delta = np.clip(wanted - self._targets, -self._velocity_step, self._velocity_step)
        self._targets = np.clip(self._targets + delta, self._lower, self._upper)
        return self._targets.copy()


class CommandNoise:
    """DART noise on the executed command: an Ornstein-Uhlenbeck process per joint.

    ``std`` (rad) is the stationary standard deviation, ``time_constant_s`` its correlation
    time: white noise at 20 Hz would be filtered out by the position servos, a drift that
    lasts a few tenths of a second moves the hand off the plan as a policy's error does.
    Only ``joints`` (default: the waist and right arm, what the expert's IK moves) are
    perturbed; the result stays within the joint limits. ``std=0`` is no noise. While the
    hand closes, squeezes, lifts and holds, the noise is scaled by ``grasp_scale``: a full
    drift there mostly knocks the cube away, which teaches little. With ``random_std`` each
    episode draws its own level uniformly in [0, ``std``]: the demonstrations then hold
    clean reaches (precision) as well as strongly perturbed ones (recoveries).
    """

    APPROACH = ('reach', 'descend', 'retreat')

    def __init__(self, sim, std=0.0, time_constant_s=0.3, grasp_scale=0.3, joints=None,
                 seed=None, random_std=False):
        if not (math.isfinite(std) and std >= 0.0):
            raise ValueError(f'std: {std} must be finite and >= 0')
        if not (math.isfinite(time_constant_s) and time_constant_s > 0.0):
            raise ValueError(f'time_constant_s: {time_constant_s} must be finite and > 0')
        names = list(JOINT_NAMES)
        self.joints = np.array([names.index(n) for n in (joints or IK_JOINTS)])
        self.std, self.decay = std, math.exp(-sim.control_dt / time_constant_s)
        self.grasp_scale, self.random_std = grasp_scale, random_std
        self._lower, self._upper = sim.joint_limits
        self.reset(seed)

    def reset(self, seed=None):
        """Start a new episode's noise (stationary from the first step)."""
        self._rng = np.random.default_rng(seed)
        self.level = self._rng.uniform(0.0, self.std) if self.random_std else self.std
        self._state = self._rng.normal(0.0, self.level, len(self.joints))

    def __call__(self, label, phase='reach'):
        """The command to execute for the clean ``label`` (32,) in the expert's ``phase``."""
        if self.level == 0.0:
            return np.asarray(label, float).copy()
        self._state = self.decay * self._state + math.sqrt(1.0 - self.decay ** 2) * \
            self._rng.normal(0.0, self.level, len(self.joints))
        out = np.array(label, float)
        scale = 1.0 if phase in self.APPROACH else self.grasp_scale
        out[self.joints] += scale * self._state
        return np.clip(out, self._lower, self._upper)


def run_episode(sim, expert, seed=None, task=None, noise=None):
    """Roll out one expert episode; return (success, number of steps).

    Success is the task's: the lift held for ``SUCCESS_HOLD_S`` (judged that long after the
    plan ends). ``noise``: a CommandNoise applied to the executed command (the expert sees
    the result through the joint readings).
    """
    obs = sim.reset(seed=seed, task=task)
    expert.reset(obs)
    if noise is not None:
        noise.reset(None if seed is None else seed + 7_919)
    steps, extra = 0, int(math.ceil(SUCCESS_HOLD_S / sim.control_dt)) + 1
    while not expert.done or extra > 0:
        if expert.done:
            extra -= 1
        label = expert.act(obs)
        obs = sim.step(label if noise is None else noise(label, expert.phase))
        steps += 1
    return sim.held_success(), steps


def main(argv=None):
    """Command line: run N expert episodes and print the success rate and timing."""
    import argparse
    import json
    import time

    from dial_ros.sim.gr1_env import GR1Sim
    parser = argparse.ArgumentParser(description='Scripted GR1 Lift expert')
    parser.add_argument('--episodes', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0, help='seed of the first episode')
    parser.add_argument('--no-render', action='store_true', help='skip the ego camera')
    parser.add_argument('--task', default='{}', help='JSON TaskSpec overrides')
    parser.add_argument('--open-loop', action='store_true', help='the first, open-loop expert')
    parser.add_argument('--noise-std', type=float, default=0.0,
                        help='DART noise on the executed command (rad)')
    parser.add_argument('--noise-time', type=float, default=0.3,
                        help='correlation time of the noise (s)')
    parser.add_argument('--grasp-scale', type=float, default=0.3,
                        help='noise scale while grasping and lifting')
    parser.add_argument('--align-yaw', action='store_true',
                        help="turn the hand to square up with the cube's yaw")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    task = json.loads(args.task)
    with GR1Sim(render=not args.no_render) as sim:
        expert = ScriptedExpert(sim, closed_loop=not args.open_loop, align_yaw=args.align_yaw)
        noise = CommandNoise(sim, args.noise_std, args.noise_time, args.grasp_scale) \
            if args.noise_std else None
        successes, steps, retried, start = 0, 0, 0, time.perf_counter()
        for episode in range(args.episodes):
            ok, n = run_episode(sim, expert, seed=args.seed + episode, task=task, noise=noise)
            successes += ok
            steps += n
            retried += expert.retries > 0
            print(f'episode {episode:3d} seed {args.seed + episode}: '
                  f'{"success" if ok else "FAIL"} ({n} steps, {expert.retries} retries)')
        elapsed = time.perf_counter() - start
    print(f'success {successes}/{args.episodes} = {100.0 * successes / args.episodes:.1f} %; '
          f'{retried} episodes retried; {elapsed / args.episodes:.2f} s per episode, '
          f'{1000 * elapsed / steps:.2f} ms per step '
          f'({"no camera" if args.no_render else "ego camera"})')


if __name__ == '__main__':
    main()
