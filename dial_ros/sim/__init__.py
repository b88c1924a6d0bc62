"""Embedded simulated GR1 humanoid (robosuite + MuJoCo) and a scripted expert, no ROS.

Importing this package picks a headless OpenGL backend (``MUJOCO_GL``: EGL, else OSMesa)
unless one is set; import it before anything imports ``mujoco``.
"""
from dial_ros.sim.headless import select_gl_backend

select_gl_backend()

__all__ = ['select_gl_backend']
