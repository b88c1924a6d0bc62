"""Build (once) and cache the MuJoCo model of robosuite's GR1 Lift scene.

robosuite composes the scene (table arena, GR1FixedLowerBody with Fourier hands, cube);
this module then edits it with ``mujoco.MjSpec``: decimated visual meshes, reflections
off, an ego camera on the head, spare distractor bodies. The compiled model is stored as
an MJB file in the user's cache (``$DIAL_ROS_CACHE`` or ``~/.cache/dial_ros``), keyed by
the robosuite / mujoco versions and the build parameters, so later runs skip robosuite
entirely (about 0.1 s instead of about 10 s). Nothing derived from the GR1 meshes is
written into the repository.
"""
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile

import numpy as np

LOG = logging.getLogger(__name__)

# Bump when the construction below changes, so stale cached models are not reused.
BUILD_VERSION = 4
EGO_CAMERA = 'ego_view'
# Ego camera on the head_pitch body: position (m), downward pitch (deg), vertical fov (deg).
EGO_CAMERA_POS = (0.12, 0.0, 0.03)
EGO_CAMERA_PITCH_DEG = 66.0
EGO_CAMERA_FOVY_DEG = 62.0
DISTRACTOR_RGBA = ((0.1, 0.4, 0.9, 1.0), (0.1, 0.7, 0.2, 1.0), (0.9, 0.8, 0.1, 1.0),
                   (0.6, 0.3, 0.8, 1.0), (0.9, 0.5, 0.1, 1.0))


def cache_dir():
    """Directory for cached models (``$DIAL_ROS_CACHE`` or ``$XDG_CACHE_HOME/dial_ros``)."""
    root = os.environ.get('DIAL_ROS_CACHE')
    if not root:
        xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        root = os.path.join(xdg, 'dial_ros')
    return os.path.join(root, 'sim')


def robosuite_lift_xml():
    """Compose robosuite's Lift task with GR1FixedLowerBody and return its MJCF text."""
    logging.getLogger('robosuite').setLevel(logging.ERROR)
    import robosuite
    from robosuite.controllers import load_composite_controller_config

    # The default GR1 controller (mink whole-body IK) is not in the wheel; the scene does
    # not depend on the controller, so any config that loads will do.
    config = load_composite_controller_config(controller=None, robot='GR1FixedLowerBody')
    config['type'] = 'BASIC'
    env = robosuite.make(
        'Lift', robots='GR1FixedLowerBody', controller_configs=config, has_renderer=False,
        has_offscreen_renderer=False, use_camera_obs=False, ignore_done=True)
    try:
        return env.sim.model.get_xml()
    finally:
        env.close()


def _look_down_quat(pitch_deg):
    """Camera quaternion looking along +x of its body, pitched down by ``pitch_deg``."""
    import mujoco
    pitch = np.radians(pitch_deg)
    x_axis = np.array([0.0, -1.0, 0.0])
    y_axis = np.array([np.sin(pitch), 0.0, np.cos(pitch)])
    z_axis = np.cross(x_axis, y_axis)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x_axis, y_axis, z_axis]).ravel())
    return quat


def _add_distractors(spec, count):
    """Add ``count`` free bodies (alternating boxes and cylinders) parked off the table."""
    import mujoco
    for i in range(count):
        body = spec.worldbody.add_body(name=f'distractor{i}', pos=[-2.0, 0.3 * i, 0.1])
        body.add_freejoint(name=f'distractor{i}_joint')
        shape = mujoco.mjtGeom.mjGEOM_BOX if i % 2 == 0 else mujoco.mjtGeom.mjGEOM_CYLINDER
        size = [0.025, 0.025, 0.025] if i % 2 == 0 else [0.025, 0.035, 0.0]
        body.add_geom(name=f'distractor{i}_g', type=shape, size=size, density=500.0,
                      rgba=list(DISTRACTOR_RGBA[i % len(DISTRACTOR_RGBA)]), group=1,
                      friction=[1.0, 0.005, 0.0001], condim=3)


def build_model(keep_fraction=0.05, n_distractors=3, xml=None):
    """Compile the edited scene and return the ``mujoco.MjModel``."""
    import mujoco

    from dial_ros.sim.meshes import decimate_visual_meshes
    spec = mujoco.MjSpec.from_string(xml if xml is not None else robosuite_lift_xml())
    if keep_fraction < 1.0:
        decimate_visual_meshes(spec, keep_fraction=keep_fraction)
    for material in spec.materials:
        material.reflectance = 0.0
    spec.body('robot0_head_pitch').add_camera(
        name=EGO_CAMERA, pos=list(EGO_CAMERA_POS),
        quat=list(_look_down_quat(EGO_CAMERA_PITCH_DEG)), fovy=EGO_CAMERA_FOVY_DEG)
    _add_distractors(spec, n_distractors)
    return spec.compile()


def _cache_key(keep_fraction, n_distractors):
    """Hash of everything the cached model depends on."""
    import mujoco
    parts = {'build': BUILD_VERSION, 'robosuite': importlib.metadata.version('robosuite'),
             'mujoco': mujoco.__version__, 'keep': round(float(keep_fraction), 4),
             'distractors': int(n_distractors)}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_model(keep_fraction=0.05, n_distractors=3, use_cache=True):
    """Return the scene model, from the cache when possible (built and stored otherwise)."""
    import mujoco
    if keep_fraction < 1.0 and importlib.util.find_spec('fast_simplification') is None:
        LOG.warning('fast-simplification is not installed: visual meshes stay full size and '
                    'rendering is about 2x slower (pip install fast-simplification==0.2.0)')
        keep_fraction = 1.0
    if not use_cache:
        return build_model(keep_fraction, n_distractors)
    path = os.path.join(cache_dir(), f'gr1_lift_{_cache_key(keep_fraction, n_distractors)}.mjb')
    if os.path.exists(path):
        try:
            return mujoco.MjModel.from_binary_path(path)
        except Exception as exc:  # a truncated or foreign file: rebuild it
            LOG.warning('ignoring unreadable cached model %s: %s', path, exc)
    LOG.info('building the GR1 scene (robosuite + mesh decimation), cached at %s', path)
    model = build_model(keep_fraction, n_distractors)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix='.mjb', dir=os.path.dirname(path))
    os.close(handle)
    try:
        mujoco.mj_saveModel(model, tmp, None)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model
