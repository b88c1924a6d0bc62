"""GR1Sim: robosuite's GR1FixedLowerBody on the Lift table, driven by 32-D joint targets.

The scene is robosuite's (``Lift`` with ``GR1FixedLowerBody`` and Fourier hands), built once
and cached (see :mod:`dial_ros.sim.scene`); stepping runs on plain MuJoCo with robosuite's
``JOINT_POSITION`` controller (``input_type="absolute"``, kp 1000, kd 200, torques
``M (kp e - kd qdot) + bias`` per body part, recomputed every 2 ms substep) and its hand
``GRIP`` controller (6 targets per hand copied onto the 11 finger drives). No robosuite env
object exists at run time, so there is no slow hard reset and no stale model handle.

Action / state order (``JOINT_NAMES``), as robosuite orders the GR1 action: right arm 7,
left arm 7, waist 3, head 3, right hand 6, left hand 6. A hand entry is named after the
finger joint it reports; the command also drives the coupled joints of that finger.
"""
import atexit
import dataclasses
import functools
import logging
import math

# dial_ros.sim/__init__.py has chosen the GL backend (MUJOCO_GL) before this import.
import mujoco
import numpy as np

from dial_ros.sim.headless import release_current_context
from dial_ros.sim.perturb import occlude
from dial_ros.sim.scene import DISTRACTOR_RGBA, EGO_CAMERA, load_model

LOG = logging.getLogger(__name__)

ARM = ('shoulder_pitch', 'shoulder_roll', 'shoulder_yaw', 'elbow_pitch', 'wrist_yaw',
       'wrist_roll', 'wrist_pitch')
HAND = ('pinky_proximal', 'ring_proximal', 'middle_proximal', 'index_proximal',
        'thumb_proximal_pitch', 'thumb_proximal_yaw')
# robosuite FourierHand.format_action: the 11 drives follow the 6 commands like this.
HAND_DRIVES = (('pinky_intermediate', 0), ('pinky_proximal', 0), ('ring_intermediate', 1),
               ('ring_proximal', 1), ('middle_intermediate', 2), ('middle_proximal', 2),
               ('index_intermediate', 3), ('index_proximal', 3), ('thumb_distal', 4),
               ('thumb_proximal_pitch', 4), ('thumb_proximal_yaw', 5))
ACTION_GROUPS = (
    ('right_arm', tuple('r_' + j for j in ARM)),
    ('left_arm', tuple('l_' + j for j in ARM)),
    ('waist', ('torso_waist_yaw', 'torso_waist_pitch', 'torso_waist_roll')),
    ('head', ('head_yaw', 'head_roll', 'head_pitch')),
    ('right_hand', tuple(f'R_{j}_joint' for j in HAND)),
    ('left_hand', tuple(f'L_{j}_joint' for j in HAND)),
)
JOINT_NAMES = tuple(name for _, names in ACTION_GROUPS for name in names)
N_JOINTS = len(JOINT_NAMES)
N_BODY = 20  # arms, waist and head: torque-controlled like robosuite's JOINT_POSITION
KP, KD = 1000.0, 200.0
# The model has no velocity limits; these are chosen (rad/s), not measured.
VELOCITY_LIMITS = {'right_arm': 3.0, 'left_arm': 3.0, 'waist': 1.5, 'head': 2.0,
                   'right_hand': 4.0, 'left_hand': 4.0}
# robosuite GR1FixedLowerBody.init_qpos in action order, hands open.
ARM_INIT = (0.0, -0.1, 0.0, -1.57, 0.0, 0.0, 0.0)
INIT_POSITIONS = np.array(ARM_INIT + tuple(-v if i == 1 else v for i, v in enumerate(ARM_INIT))
                          + (0.0,) * 18)
LIMIT_TOLERANCE = 1e-6
LIFT_HEIGHT = 0.04  # robosuite Lift success: cube centre 4 cm above the table top
# ... and it must stay up this long: a knocked cube that flies up is no lift
SUCCESS_HOLD_S = 1.0
# task-completion milestones: the palm's grasp point within REACH_RADIUS of the cube centre,
# then the cube off the table by RAISE_HEIGHT, then LIFT_HEIGHT (success)
GRASP_POINT = (0.01, 0.04, -0.085)  # in the right wrist site frame: the middle of the palm
REACH_RADIUS = 0.06
RAISE_HEIGHT = 0.01


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One Lift variant; positions are metres relative to the table-top centre.

    The default cube region lies in front of the right hand (robot base at x = -0.55).
    ``cube_rgba=None`` keeps robosuite's red-wood cube; any RGBA gives a plain colour.
    ``distractor_rgba`` is a sequence of RGBA, one per distractor (None: blue, green,
    yellow, ...). Ranges are (low, high) tuples sampled uniformly; the cube yaw is in rad.
    """

    cube_x_range: tuple = (-0.28, -0.20)
    cube_y_range: tuple = (-0.20, -0.12)
    cube_yaw_range: tuple = (0.0, math.pi / 2)
    cube_half_size_range: tuple = (0.020, 0.022)
    cube_rgba: tuple = None
    n_distractors: int = 0
    distractor_rgba: tuple = None
    distractor_x_range: tuple = (-0.30, 0.0)
    distractor_y_range: tuple = (-0.30, 0.25)
    distractor_min_gap: float = 0.10
    joint_noise: float = 0.0
    instruction: str = 'pick up the cube'


class GR1Sim:
    """Middleware-free simulated GR1 (fixed lower body) with an ego camera on its head.

    ``reset(seed, task) -> obs``, ``step(joint_targets) -> obs``, ``success()``; obs is
    ``{'image': HxWx3 uint8 or None, 'joint_positions': (32,), 'joint_velocities': (32,),
    'time': s}``. Targets outside the position limits raise ValueError; the velocity
    limits are advisory (not enforced here). ``cube_pose()`` is privileged state for
    experts and metrics only. Not thread-safe: calls may come from any thread (the GL
    context is released after each frame) but never concurrently.
    """

    def __init__(self, camera_size=224, camera_name=EGO_CAMERA, control_hz=20.0, seed=0,
                 task=None, render=True, n_distractor_slots=3, mesh_keep_fraction=0.05,
                 msaa_samples=0):
        """Load (or build and cache) the scene; call :meth:`reset` before stepping.

        Args:
            camera_size: image side in pixels, or (height, width).
            camera_name: camera for ``obs['image']``; default the head's 'ego_view'
                (robosuite's own cameras, e.g. 'robot0_robotview', work too).
            control_hz: control rate; the 2 ms physics step is repeated to fill a period.
            seed: seed of the episode generator (``reset(seed=...)`` reseeds it).
            task: default TaskSpec, or a dict of TaskSpec fields to change.
            render: whether observations carry an image (``None`` otherwise).
            n_distractor_slots: spare distractor bodies in the model (part of the cache key).
            mesh_keep_fraction: share of visual-mesh faces kept by decimation (cache key).
            msaa_samples: multisampling of the offscreen buffer (0: off, fastest).
        """
        self.model = load_model(mesh_keep_fraction, n_distractor_slots)
        _stiffen_joint_limits(self.model)
        self.data = mujoco.MjData(self.model)
        self._substeps = max(1, int(round(1.0 / (control_hz * self.model.opt.timestep))))
        self.control_dt = self._substeps * self.model.opt.timestep
        self.default_task = self._as_task(task, TaskSpec())
        self.task = self.default_task
        self._rng = np.random.default_rng(seed)
        self._n_slots = n_distractor_slots
        self._index_model()
        self._targets = INIT_POSITIONS.copy()
        self._lifted_since = None
        self._renderer = None
        self.camera_name = camera_name
        # share of the ego image blocked by an occluder (dial_ros.sim.perturb); reset clears it
        self.occlusion = 0.0
        if render:
            self._open_renderer(camera_size, camera_name, msaa_samples)

    # ----------------------------------------------------------------- model indexing
    def _index_model(self):
        """Resolve joint, actuator, geom and body ids once."""
        m = self.model
        body_names = ['robot0_' + n for n in JOINT_NAMES[:N_BODY]]
        hand_names = [f'gripper0_{"right" if n[0] == "R" else "left"}_{n}'
                      for n in JOINT_NAMES[N_BODY:]]
        joints = [m.joint(n) for n in body_names + hand_names]
        self._qadr = np.array([j.qposadr[0] for j in joints])
        self._dadr = np.array([j.dofadr[0] for j in joints])
        self._body_act = np.array([m.actuator(n).id for n in body_names])
        blocks = np.zeros((N_BODY, N_BODY))
        start = 0
        for _, names in ACTION_GROUPS[:4]:
            blocks[start:start + len(names), start:start + len(names)] = 1.0
            start += len(names)
        self._block_mask = blocks
        self._body_dof_ix = np.ix_(self._dadr[:N_BODY], self._dadr[:N_BODY])
        self._mass = np.zeros((m.nv, m.nv))
        lower, upper = m.jnt_range[[j.id for j in joints]].T.copy()
        drive_ids, drive_src = [], []
        for h, side, prefix in ((0, 'right', 'R'), (1, 'left', 'L')):
            for joint, k in HAND_DRIVES:
                act = m.actuator(f'gripper0_{side}_{prefix}_{joint}_joint_drive')
                drive_ids.append(act.id)
                src = N_BODY + 6 * h + k
                drive_src.append(src)
                lower[src] = max(lower[src], act.ctrlrange[0])
                upper[src] = min(upper[src], act.ctrlrange[1])
        self._hand_act = np.array(drive_ids)
        self._hand_src = np.array(drive_src)
        self._lower, self._upper = lower, upper
        self._velocity = np.concatenate(
            [np.full(len(names), VELOCITY_LIMITS[group]) for group, names in ACTION_GROUPS])
        self._cube_body = m.body('cube_main').id
        self._wrist_site = m.site('robot0_r_wrist_site').id
        self._cube_qadr = m.joint('cube_joint0').qposadr[0]
        self._cube_geoms = [m.geom('cube_g0').id, m.geom('cube_g0_vis').id]
        self._cube_mat = int(m.geom_matid[self._cube_geoms[1]])
        self._cube_rgba = m.geom_rgba[self._cube_geoms[1]].copy()
        size = m.geom_size[self._cube_geoms[0]]
        self._cube_density = m.body_mass[self._cube_body] / (8.0 * np.prod(size))
        self._distractors = [(m.joint(f'distractor{i}_joint').qposadr[0],
                              m.geom(f'distractor{i}_g').id) for i in range(self._n_slots)]
        table = m.geom('table_collision').id
        mujoco.mj_forward(m, self.data)
        self.table_center = self.data.geom_xpos[table][:2].copy()
        self.table_top = float(self.data.geom_xpos[table][2] + m.geom_size[table][2])

    def _open_renderer(self, camera_size, camera_name, msaa_samples=0):
        """Create the offscreen renderer for the ego camera (images come out upright).

        Multisampling is off by default: on llvmpipe 4x MSAA costs 14 ms instead of 6 ms
        per 224 px frame, for slightly smoother edges.
        """
        height, width = (camera_size, camera_size) if np.isscalar(camera_size) else camera_size
        if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera_name) < 0:
            names = [self.model.camera(i).name for i in range(self.model.ncam)]
            raise ValueError(f'camera_name {camera_name!r} is not in the model: {names}')
        glob = self.model.vis.global_
        glob.offwidth, glob.offheight = max(glob.offwidth, width), max(glob.offheight, height)
        self.model.vis.quality.offsamples = msaa_samples
        self._renderer = mujoco.Renderer(self.model, height, width)
        # The skybox is hidden behind the arena walls from the head; skipping it saves ~2 ms.
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        # Free the GL context before mujoco.egl's own exit hook terminates the display
        # (atexit runs last-registered first); otherwise EGL errors are printed at exit.
        self._close_hook = functools.partial(_close_quietly, self._renderer)
        atexit.register(self._close_hook)
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[:] = 0
        self._scene_option.geomgroup[1] = 1  # visual geoms only (collision meshes hidden)
        self._scene_option.sitegroup[:] = 0

    # ----------------------------------------------------------------- properties
    @property
    def joint_names(self):
        """The 32 commanded joints, in action order."""
        return list(JOINT_NAMES)

    @property
    def action_groups(self):
        """(group name, joint names) pairs in action order."""
        return [(group, list(names)) for group, names in ACTION_GROUPS]

    @property
    def joint_limits(self):
        """(lower, upper) position limits in rad, arrays of shape (32,)."""
        return self._lower.copy(), self._upper.copy()

    @property
    def velocity_limits(self):
        """Chosen (not modelled) velocity limits in rad/s, shape (32,)."""
        return self._velocity.copy()

    @property
    def targets(self):
        """The joint targets in force (32,)."""
        return self._targets.copy()

    # ----------------------------------------------------------------- episode
    @staticmethod
    def _as_task(task, base):
        """Accept a TaskSpec, a dict of TaskSpec fields overriding ``base``, or None."""
        if task is None:
            return base
        if isinstance(task, TaskSpec):
            return task
        if isinstance(task, dict):
            unknown = set(task) - {f.name for f in dataclasses.fields(TaskSpec)}
            if unknown:
                raise ValueError(f'task has unknown fields: {sorted(unknown)}')
            return dataclasses.replace(base, **task)
        raise ValueError(f'task must be a TaskSpec, a dict or None, got {type(task).__name__}')

    def reset(self, seed=None, task=None):
        """Start an episode (arms half extended, hands open, cube placed); return the obs."""
        task = self._as_task(task, self.default_task)
        if task.n_distractors > self._n_slots:
            raise ValueError(f'task.n_distractors={task.n_distractors} exceeds the '
                             f'{self._n_slots} distractor slots of this sim')
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.task = task
        m, d = self.model, self.data
        self._set_cube_size(self._rng.uniform(*task.cube_half_size_range, size=3))
        mujoco.mj_setConst(m, d)  # mass-dependent constants (0.2 ms); uses d as scratch
        mujoco.mj_resetData(m, d)
        start = INIT_POSITIONS.copy()
        if task.joint_noise > 0:
            start[:N_BODY] += self._rng.normal(0.0, task.joint_noise, N_BODY)
        start = np.clip(start, self._lower, self._upper)
        d.qpos[self._qadr] = start
        self._targets = start
        d.ctrl[self._hand_act] = start[self._hand_src]
        self._place_objects(task)
        mujoco.mj_forward(m, d)
        self._lifted_since = None
        self.occlusion = 0.0
        return self._observation()

    def _place_objects(self, task):
        """Colour and place the (already sized) cube and the distractors for ``task``."""
        rng, m, d = self._rng, self.model, self.data
        half = m.geom_size[self._cube_geoms[0]]
        vis = self._cube_geoms[1]
        if task.cube_rgba is None:
            m.geom_matid[vis], m.geom_rgba[vis] = self._cube_mat, self._cube_rgba
        else:
            m.geom_matid[vis], m.geom_rgba[vis] = -1, np.asarray(task.cube_rgba, float)
        cube_xy = self.table_center + [rng.uniform(*task.cube_x_range),
                                       rng.uniform(*task.cube_y_range)]
        self.cube_rest_z = self.table_top + half[2]
        _set_free_pose(d, self._cube_qadr, [*cube_xy, self.cube_rest_z],
                       rng.uniform(*task.cube_yaw_range))
        placed = [cube_xy]
        for i, (qadr, geom) in enumerate(self._distractors):
            height = m.geom_size[geom][2] if m.geom_type[geom] == mujoco.mjtGeom.mjGEOM_BOX \
                else m.geom_size[geom][1]
            if i >= task.n_distractors:
                _set_free_pose(d, qadr, [-2.0, 0.3 * i, height], 0.0)  # parked off the table
                continue
            for _ in range(100):
                xy = self.table_center + [rng.uniform(*task.distractor_x_range),
                                          rng.uniform(*task.distractor_y_range)]
                if min(np.linalg.norm(xy - p) for p in placed) >= task.distractor_min_gap:
                    break
            placed.append(xy)
            palette = task.distractor_rgba or DISTRACTOR_RGBA
            m.geom_rgba[geom] = palette[i % len(palette)]
            _set_free_pose(d, qadr, [*xy, self.table_top + height], rng.uniform(0, math.pi))

    def _set_cube_size(self, half):
        """Resize the cube geoms at run time (bounding data and mass follow)."""
        m = self.model
        for geom in self._cube_geoms:
            m.geom_size[geom] = half
            m.geom_rbound[geom] = float(np.linalg.norm(half))
            m.geom_aabb[geom][3:] = half
        mass = self._cube_density * 8.0 * float(np.prod(half))
        m.body_mass[self._cube_body] = mass
        sq = half ** 2
        m.body_inertia[self._cube_body] = mass / 3.0 * np.array(
            [sq[1] + sq[2], sq[0] + sq[2], sq[0] + sq[1]])

    def check_targets(self, joint_targets):
        """Validate a command; return it as float64 (32,), clipped within tolerance.

        Raises ValueError naming the problem: wrong shape, non-finite values, or a target
        outside the position limits (by more than 1e-6 rad).
        """
        try:
            targets = np.asarray(joint_targets, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'joint_targets must be numeric: {exc}') from None
        if targets.shape != (N_JOINTS,):
            raise ValueError(f'joint_targets must have shape ({N_JOINTS},), '
                             f'got {targets.shape}')
        bad = ~np.isfinite(targets)
        if bad.any():
            names = [JOINT_NAMES[i] for i in np.flatnonzero(bad)]
            raise ValueError(f'joint_targets has non-finite values for {names}')
        out = (targets < self._lower - LIMIT_TOLERANCE) | (targets > self._upper + LIMIT_TOLERANCE)
        if out.any():
            desc = ', '.join(f'{JOINT_NAMES[i]}={targets[i]:.4f} not in '
                             f'[{self._lower[i]:.4f}, {self._upper[i]:.4f}]'
                             for i in np.flatnonzero(out))
            raise ValueError(f'joint_targets out of range: {desc}')
        return np.clip(targets, self._lower, self._upper)

    def step(self, joint_targets):
        """Hold ``joint_targets`` (rad, (32,), action order) for one control period."""
        self._targets = self.check_targets(joint_targets)
        m, d = self.model, self.data
        d.ctrl[self._hand_act] = self._targets[self._hand_src]
        body_target = self._targets[:N_BODY]
        qadr, dadr = self._qadr[:N_BODY], self._dadr[:N_BODY]
        for _ in range(self._substeps):
            mujoco.mj_step1(m, d)
            mujoco.mj_fullM(m, self._mass, d.qM)
            acc = KP * (body_target - d.qpos[qadr]) - KD * d.qvel[dadr]
            torque = (self._mass[self._body_dof_ix] * self._block_mask) @ acc
            d.ctrl[self._body_act] = torque + d.qfrc_bias[dadr]
            mujoco.mj_step2(m, d)
        mujoco.mj_kinematics(m, d)  # poses for the image match the returned joint readings
        if not self.success():
            self._lifted_since = None
        elif self._lifted_since is None:
            self._lifted_since = float(d.time)
        return self._observation()

    # ----------------------------------------------------------------- observation
    def observe(self):
        """The observation of the current state (what the last reset or step returned)."""
        return self._observation()

    def _observation(self):
        """Observation dict: image (or None), joint positions / velocities, time."""
        return {
            'image': self.render() if self._renderer is not None else None,
            'joint_positions': self.data.qpos[self._qadr].copy(),
            'joint_velocities': self.data.qvel[self._dadr].copy(),
            'time': float(self.data.time),
        }

    def render(self, camera=None):
        """Render an upright HxWx3 uint8 image from ``camera`` (default: the ego camera)."""
        if self._renderer is None:
            raise ValueError('render is off for this GR1Sim (constructed with render=False)')
        self._renderer.update_scene(self.data, camera=camera or self.camera_name,
                                    scene_option=self._scene_option)
        image = self._renderer.render()
        release_current_context()  # the next frame may come from another thread
        if self.occlusion > 0 and (camera or self.camera_name) == self.camera_name:
            image = occlude(image, self.occlusion)
        return image

    def cube_pose(self):
        """Privileged cube state: (position (3,), quaternion wxyz (4,)) in the world frame."""
        pose = self.data.qpos[self._cube_qadr:self._cube_qadr + 7]
        return pose[:3].copy(), pose[3:].copy()

    def success(self):
        """Whether the cube centre is more than 4 cm above the table top (robosuite Lift)."""
        return bool(self.data.qpos[self._cube_qadr + 2] > self.table_top + LIFT_HEIGHT)

    def lifted_since(self):
        """Sim time (s) since which :meth:`success` has held at every step, or None."""
        return self._lifted_since if self.success() else None

    def held_success(self, hold_s=SUCCESS_HOLD_S):
        """The task's success test: the lift has held for ``hold_s`` of sim time."""
        since = self.lifted_since()
        return since is not None and self.data.time - since >= hold_s - 1e-9

    def progress(self):
        """Task completion now, in thirds: 1/3 the palm reached the cube (grasp point within
        6 cm of its centre), 2/3 the cube is 1 cm off the table, 1 lifted (success)."""
        d = self.data
        if self.success():
            return 1.0
        if d.qpos[self._cube_qadr + 2] > self.cube_rest_z + RAISE_HEIGHT:
            return 2.0 / 3.0
        palm = d.site_xpos[self._wrist_site] + d.site_xmat[self._wrist_site].reshape(3, 3) @ \
            np.asarray(GRASP_POINT)
        near = np.linalg.norm(palm - d.qpos[self._cube_qadr:self._cube_qadr + 3]) < REACH_RADIUS
        return 1.0 / 3.0 if near else 0.0

    def close(self):
        """Free the renderer (also done at garbage collection / interpreter exit)."""
        if self._renderer is not None:
            atexit.unregister(self._close_hook)
            _close_quietly(self._renderer)
            self._renderer = None

    def __del__(self):
        """Close the renderer when the sim is garbage collected."""
        if getattr(self, '_renderer', None) is not None:
            self.close()

    def __enter__(self):
        """Use as a context manager that closes the renderer."""
        return self

    def __exit__(self, *exc):
        """Close on leaving the context."""
        self.close()


def _stiffen_joint_limits(model):
    """Hard stops for the robot's joints, as on the real robot.

    MuJoCo's default soft limits (solref 0.02 s) let contacts bend the weak finger servos
    (kp 2) 0.4 rad past their range; 4 ms (two physics steps) keeps them within ~0.03 rad.
    """
    robot = [i for i in range(model.njnt)
             if model.joint(i).name.startswith(('robot0_', 'gripper0_')) and model.jnt_limited[i]]
    model.jnt_solref[robot] = [0.004, 1.0]
    model.jnt_solimp[robot] = [0.95, 0.99, 0.001, 0.5, 2.0]


def _close_quietly(renderer):
    """Close a mujoco.Renderer, ignoring GL errors (the display may be gone at exit)."""
    try:
        renderer.close()
    except Exception as exc:  # noqa: BLE001 - best effort at shutdown
        LOG.debug('renderer close failed: %s', exc)


def _set_free_pose(data, qadr, pos, yaw):
    """Place a free joint at ``pos`` with a yaw rotation, at rest."""
    data.qpos[qadr:qadr + 3] = pos
    data.qpos[qadr + 3:qadr + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def embodiment_yaml(sim):
    """Return the embodiment description of ``sim`` (config/embodiments/gr1_sim.yaml)."""
    def flow(values):
        return '[' + ', '.join(values) + ']'

    def number(value):
        text = f'{float(value):.10g}'
        return text if any(c in text for c in '.en') else text + '.0'

    def numbers(array):
        return flow(number(v) for v in array)

    lower, upper = sim.joint_limits
    lines = [
        '# Generated by: python -m dial_ros.sim.gr1_env --write-embodiment PATH',
        'name: gr1_sim            # the embedded robosuite GR1 (FixedLowerBody), '
        '32-D joint positions',
        'embodiment_id: 1',
        f'joint_names: {flow(sim.joint_names)}',
        'action_groups:            # in action-vector order; kinds: joint | eef_pos | eef_rot6d',
    ]
    lines += [f'  - {{name: {group}, kind: joint, joints: {flow(names)}}}'
              for group, names in sim.action_groups]
    lines += [
        'state: {sin_cos: true}',
        'limits:',
        f'  position_lower: {numbers(lower)}',
        f'  position_upper: {numbers(upper)}',
        '  # velocity limits are chosen, the model has none (rad/s)',
        f'  velocity: {numbers(sim.velocity_limits)}',
    ]
    return '\n'.join(lines) + '\n'


def bench(steps=200, camera_size=224):
    """Time construction, reset and step (without / with the ego camera); print ms."""
    import time
    for render in (False, True):
        start = time.perf_counter()
        sim = GR1Sim(camera_size=camera_size, render=render)
        built = time.perf_counter() - start
        start = time.perf_counter()
        obs = sim.reset(seed=0)
        reset_s = time.perf_counter() - start
        base = obs['joint_positions'].copy()
        wave = np.zeros(N_JOINTS)
        wave[[0, 2, 3]] = [0.3, 0.3, 0.4]  # right shoulder pitch / yaw, elbow
        start = time.perf_counter()
        for i in range(steps):
            sim.step(base + wave * math.sin(2 * math.pi * i / 40))
        per_step = (time.perf_counter() - start) / steps
        label = f'camera {camera_size} px' if render else 'no camera'
        print(f'{label:>16}: {1000 * per_step:6.2f} ms/step ({1 / per_step:6.1f} Hz), '
              f'construct {built:.2f} s, reset {1000 * reset_s:.1f} ms, '
              f'{sim._substeps} substeps of {1000 * sim.model.opt.timestep:g} ms')
        sim.close()


def main(argv=None):
    """Command line: --bench, --write-embodiment PATH, --snapshot PNG."""
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bench', action='store_true', help='time step with / without camera')
    parser.add_argument('--steps', type=int, default=200, help='steps for --bench')
    parser.add_argument('--camera-size', type=int, default=224)
    parser.add_argument('--write-embodiment', metavar='PATH', help='write the embodiment YAML')
    parser.add_argument('--snapshot', metavar='PNG', help='save the ego image after reset')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if args.bench:
        bench(args.steps, args.camera_size)
    if args.write_embodiment:
        with GR1Sim(render=False) as sim, open(args.write_embodiment, 'w') as handle:
            handle.write(embodiment_yaml(sim))
        print(f'wrote {args.write_embodiment}')
    if args.snapshot:
        from PIL import Image
        with GR1Sim(camera_size=args.camera_size) as sim:
            Image.fromarray(sim.reset(seed=args.seed)['image']).save(args.snapshot)
        print(f'wrote {args.snapshot}')
    if not (args.bench or args.write_embodiment or args.snapshot):
        parser.print_help()


if __name__ == '__main__':
    main()
