"""Decimation of the visual meshes of a MuJoCo scene, for rendering speed on a CPU.

Rendering the GR1 scene with llvmpipe is bound by geometry (about 627k mesh faces). Only
meshes used by purely visual geoms (contype = conaffinity = 0) are decimated; collision
meshes are left alone, since changing them changes the physics (and slowed it 4x when
measured). The meshes are read from the installed robosuite package at build time and the
result lives only in the user's model cache, never in this repository.
"""
import logging
import os

import numpy as np

LOG = logging.getLogger(__name__)


def read_stl(path):
    """Read a binary or ASCII STL file into shared vertices (n, 3) and faces (m, 3)."""
    size = os.path.getsize(path)
    with open(path, 'rb') as handle:
        data = handle.read()
    count = int(np.frombuffer(data, dtype='<u4', count=1, offset=80)[0]) if size >= 84 else -1
    if size == 84 + 50 * count:
        record = np.dtype([('normal', '<f4', 3), ('tri', '<f4', (3, 3)), ('attr', '<u2')])
        tris = np.frombuffer(data, dtype=record, count=count, offset=84)['tri']
    else:
        words = data.decode('ascii', errors='replace').split()
        coords = [float(words[i + 1 + k]) for i, word in enumerate(words) if word == 'vertex'
                  for k in range(3)]
        tris = np.asarray(coords, dtype=np.float32).reshape(-1, 3, 3)
    flat = tris.reshape(-1, 3).astype(np.float64)
    verts, inverse = np.unique(flat, axis=0, return_inverse=True)
    faces = inverse.reshape(-1, 3).astype(np.int64)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (
        faces[:, 0] != faces[:, 2])
    return verts, faces[keep]


def simplify(verts, faces, keep_fraction):
    """Quadric-error decimation down to about ``keep_fraction`` of the faces."""
    import fast_simplification
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f'keep_fraction must be in (0, 1], got {keep_fraction}')
    if keep_fraction >= 1.0:
        return verts, faces
    new_verts, new_faces = fast_simplification.simplify(
        verts.astype(np.float32), faces.astype(np.int32),
        target_reduction=1.0 - keep_fraction)
    return np.asarray(new_verts, dtype=np.float64), np.asarray(new_faces, dtype=np.int64)


def visual_only_meshes(spec):
    """Names of the meshes that only non-colliding (visual) geoms use."""
    import mujoco
    visual, other = set(), set()
    for geom in spec.geoms:
        if geom.type != mujoco.mjtGeom.mjGEOM_MESH or not geom.meshname:
            continue
        is_visual = geom.contype == 0 and geom.conaffinity == 0
        (visual if is_visual else other).add(geom.meshname)
    return visual - other


def decimate_visual_meshes(spec, keep_fraction=0.05, min_faces=400):
    """Replace every visual-only file mesh of ``spec`` by a decimated copy, in place.

    Meshes with fewer than ``min_faces`` faces are kept. Returns (faces before, after)
    summed over the meshes that were looked at.
    """
    names = visual_only_meshes(spec)
    before = after = 0
    for mesh in spec.meshes:
        if mesh.name not in names or not mesh.file:
            continue
        path = mesh.file
        if not os.path.isabs(path) and spec.meshdir:
            path = os.path.join(spec.meshdir, path)
        if not path.lower().endswith('.stl'):
            continue
        verts, faces = read_stl(path)
        before += len(faces)
        if len(faces) >= min_faces:
            target = max(keep_fraction, min_faces / len(faces))
            verts, faces = simplify(verts, faces, target)
        after += len(faces)
        mesh.file = ''
        mesh.uservert = verts.ravel().tolist()
        mesh.userface = faces.ravel().tolist()
    LOG.info('decimated visual meshes: %d -> %d faces', before, after)
    return before, after
