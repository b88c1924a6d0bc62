"""Perturbations of a running GR1Sim episode, to test what notices them (the surprise monitor).

Each function changes the world mid-episode the way an operator or the world would: the
cube moved or taken away, the head camera blocked, an object the policy never saw put on
the table. They act on the sim's state directly (kinematics updated, so the next image
shows the change); ``GR1Sim.reset`` undoes all of them.
"""
import math

import mujoco
import numpy as np

KINDS = ('move_cube', 'remove_cube', 'occlude_camera', 'add_object')
UNSEEN_RGBA = (0.95, 0.45, 0.05, 1.0)  # orange: no training demo has a distractor at all
PARK = (-2.0, -0.5)  # off the table, out of view


def occlude(image, fraction):
    """Grey out a centred square covering ``fraction`` of the image (a hand over the lens)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f'occlusion: {fraction} is not a fraction in [0, 1]')
    height, width = image.shape[:2]
    h, w = int(round(height * math.sqrt(fraction))), int(round(width * math.sqrt(fraction)))
    top, left = (height - h) // 2, (width - w) // 2
    image = image.copy()
    image[top:top + h, left:left + w] = 60
    return image


def _place(sim, qadr, xyz, yaw=0.0):
    d = sim.data
    d.qpos[qadr:qadr + 3] = xyz
    d.qpos[qadr + 3:qadr + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
    joint = int(np.flatnonzero(sim.model.jnt_qposadr == qadr)[0])
    dof = sim.model.jnt_dofadr[joint]
    d.qvel[dof:dof + 6] = 0.0  # a free joint: at rest where it is put
    mujoco.mj_forward(sim.model, d)


def move_cube(sim, dx, dy):
    """Slide the cube by (dx, dy) m on the table, at rest (set down if it was held)."""
    pos, quat = sim.cube_pose()
    yaw = 2.0 * math.atan2(quat[3], quat[0])
    _place(sim, sim._cube_qadr, [pos[0] + dx, pos[1] + dy, sim.cube_rest_z], yaw)


def remove_cube(sim):
    """Take the cube away (parked off the table)."""
    _place(sim, sim._cube_qadr, [*PARK, sim.cube_rest_z])


def occlude_camera(sim, fraction=0.5):
    """Block ``fraction`` of the head camera's image from now on."""
    occlude(np.zeros((1, 1, 3), np.uint8), fraction)  # the range check
    sim.occlusion = float(fraction)


def add_object(sim, rng, rgba=UNSEEN_RGBA, gap=(0.07, 0.12)):
    """Put an unseen block (distractor slot 0, orange) on the table near the cube."""
    if not sim._distractors:
        raise ValueError('add_object: this GR1Sim has no distractor slots')
    qadr, geom = sim._distractors[0]
    sim.model.geom_rgba[geom] = rgba
    angle, dist = rng.uniform(0.0, 2.0 * math.pi), rng.uniform(*gap)
    cube = sim.cube_pose()[0]
    height = sim.model.geom_size[geom][2]
    _place(sim, qadr, [cube[0] + dist * math.cos(angle), cube[1] + dist * math.sin(angle),
                       sim.table_top + height], rng.uniform(0.0, math.pi))


def apply(sim, kind, rng):
    """Apply the perturbation named ``kind`` (one of KINDS) with random details from ``rng``."""
    if kind == 'move_cube':
        angle = rng.uniform(0.0, 2.0 * math.pi)
        dist = rng.uniform(0.08, 0.12)
        move_cube(sim, dist * math.cos(angle), dist * math.sin(angle))
    elif kind == 'remove_cube':
        remove_cube(sim)
    elif kind == 'occlude_camera':
        occlude_camera(sim, rng.uniform(0.3, 0.5))
    elif kind == 'add_object':
        add_object(sim, rng)
    else:
        raise ValueError(f'perturbation: {kind!r} is not one of {list(KINDS)}')
