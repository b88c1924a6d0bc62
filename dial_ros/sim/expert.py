"""Scripted expert for GR1Sim's Lift task: IK keyframes, interpolated joint targets.

What it uses is what a teleoperator has: the robot's joint readings at the start of the
episode, a kinematic model of the robot (the sim's MjModel, on a private MjData, for
inverse kinematics) and the cube pose, which it reads from the simulator's state
(``GR1Sim.cube_pose``, privileged) once per episode as a stand-in for the operator's eyes.
It never writes to the simulation; its only output is the 32-D joint target vector. After
the first step it is open loop: it follows its own targets, not the joint readings.

Phases (control steps at 20 Hz): reach a pre-grasp point 10 cm back from the cube along
the palm normal (30) -> descend onto the cube (20) -> close the hand (15) -> squeeze (5)
-> lift 20 cm (30) -> hold. The grasp point (in the palm, 8.5 cm ahead of the right wrist)
moves on straight lines; every step solves damped-least-squares IK over the waist (3) and
right arm (7) for it and a fixed hand orientation (palm down-inwards, fingers pitched down
15 deg, turned to square up with the cube's yaw), warm started from the previous targets.
Measured (``python -m dial_ros.sim.expert --episodes 100 --no-render``): 100/100 seeds
0-99 lift the cube; 49/50 with 3 distractors and 0.03 rad start-pose noise.
"""
import logging
import math

import mujoco
import numpy as np

from dial_ros.sim.gr1_env import GRASP_POINT, INIT_POSITIONS, JOINT_NAMES, N_BODY

IK_JOINTS = ('torso_waist_yaw', 'torso_waist_pitch', 'torso_waist_roll') + tuple(
    'r_' + j for j in ('shoulder_pitch', 'shoulder_roll', 'shoulder_yaw', 'elbow_pitch',
                       'wrist_yaw', 'wrist_roll', 'wrist_pitch'))
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
    """Reach, descend, close, squeeze, lift: a right-hand grasp of the Lift cube.

    The grasp point is fixed in the wrist frame (``grasp_point``: x towards the thumb,
    y out of the palm, z back along the forearm, so fingers point to -z). The hand
    orientation is the nominal wrist frame (fingers forward, thumb up, palm inwards)
    rolled about the forearm by ``hand_roll_deg``, pitched down by ``hand_pitch_deg`` and,
    with ``align_yaw``, turned about the vertical to square up with the cube. Each phase
    moves the grasp point along a straight line; every control step solves the IK warm
    started from the previous targets.
    """

    PHASES = (('reach', 30), ('descend', 20), ('close', 15), ('squeeze', 5), ('lift', 30))

    def __init__(self, sim, grasp_point=GRASP_POINT, approach=0.10, lift_height=0.20,
                 hand_pitch_deg=15.0, hand_roll_deg=-70.0, align_yaw=True,
                 open_hand=(0.0, 0.0, 0.0, 0.0, 0.0, 1.3),
                 closed_hand=(1.5, 1.5, 1.5, 1.5, 1.0, 1.3)):
        """Bind to ``sim`` (a GR1Sim); the keyword arguments tune the grasp geometry."""
        self.sim = sim
        self.grasp_point = np.asarray(grasp_point, float)
        self.approach = approach
        self.lift_height = lift_height
        self.align_yaw = align_yaw
        self.open_hand = np.asarray(open_hand, float)
        self.closed_hand = np.asarray(closed_hand, float)
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

    # ----------------------------------------------------------------- episode
    def reset(self, obs):
        """Plan from the first observation of an episode (reads the cube pose from the sim)."""
        self.done = False
        self._targets = np.clip(obs['joint_positions'], self._lower, self._upper)
        cube_pos, cube_quat = self.sim.cube_pose()
        self.hand_orientation = self.base_orientation
        if self.align_yaw:
            yaw = 2.0 * math.atan2(cube_quat[3], cube_quat[0])
            turn = (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
            self.hand_orientation = _rot([0.0, 0.0, 1.0], turn) @ self.base_orientation
        palm_normal = self.hand_orientation[:, 1]
        self._grasp = cube_pos.copy()
        self._pregrasp = cube_pos - self.approach * palm_normal
        self._lifted = cube_pos + [0.0, 0.0, self.lift_height]
        self._phase_index = -1
        self._next_phase()

    def _next_phase(self):
        """Advance to the next phase: a straight grasp-point line and a hand posture."""
        self._phase_index += 1
        if self._phase_index >= len(self.PHASES):
            self.phase, self.done = 'hold', True
            return
        self.phase, self._steps = self.PHASES[self._phase_index]
        self._step = 0
        start = self.grasp_position(self._targets)
        end = {'reach': self._pregrasp, 'descend': self._grasp,
               'lift': self._lifted}.get(self.phase, start)  # close / squeeze: hold
        self._line = (start, end)
        self._hands = (self._targets[RIGHT_HAND].copy(),
                       self.open_hand if self.phase in ('reach', 'descend')
                       else self.closed_hand)

    def act(self, obs):
        """Return the joint targets (32,) for this control step (``obs`` is not used)."""
        if not self.done and self._step >= self._steps:
            self._next_phase()
        if not self.done:
            self._step += 1
            alpha = self._step / self._steps
            point = (1.0 - alpha) * self._line[0] + alpha * self._line[1]
            wanted, _, _ = self.solve_ik(self._targets, point)
            wanted[RIGHT_HAND] = (1.0 - alpha) * self._hands[0] + alpha * self._hands[1]
            delta = np.clip(wanted - self._targets, -self._velocity_step, self._velocity_step)
            self._targets = np.clip(self._targets + delta, self._lower, self._upper)
        return self._targets.copy()


def run_episode(sim, expert, seed=None, task=None, extra_steps=10):
    """Roll out one expert episode; return (success, number of steps)."""
    obs = sim.reset(seed=seed, task=task)
    expert.reset(obs)
    steps = 0
    while not expert.done or extra_steps > 0:
        if expert.done:
            extra_steps -= 1
        obs = sim.step(expert.act(obs))
        steps += 1
    return sim.success(), steps


def main(argv=None):
    """Command line: run N expert episodes and print the success rate and timing."""
    import argparse
    import time

    from dial_ros.sim.gr1_env import GR1Sim
    parser = argparse.ArgumentParser(description='Scripted GR1 Lift expert')
    parser.add_argument('--episodes', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0, help='seed of the first episode')
    parser.add_argument('--no-render', action='store_true', help='skip the ego camera')
    parser.add_argument('--distractors', type=int, default=0)
    parser.add_argument('--joint-noise', type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    task = {'n_distractors': args.distractors, 'joint_noise': args.joint_noise}
    with GR1Sim(render=not args.no_render) as sim:
        expert = ScriptedExpert(sim)
        successes, steps, start = 0, 0, time.perf_counter()
        for episode in range(args.episodes):
            ok, n = run_episode(sim, expert, seed=args.seed + episode, task=task)
            successes += ok
            steps += n
            print(f'episode {episode:3d} seed {args.seed + episode}: '
                  f'{"success" if ok else "FAIL"} ({n} steps)')
        elapsed = time.perf_counter() - start
    print(f'success {successes}/{args.episodes} = {100.0 * successes / args.episodes:.1f} %; '
          f'{elapsed / args.episodes:.2f} s per episode, {1000 * elapsed / steps:.2f} ms per step '
          f'({"no camera" if args.no_render else "ego camera"})')


if __name__ == '__main__':
    main()
