"""Choose a headless OpenGL backend for MuJoCo before ``mujoco`` is imported.

MuJoCo reads ``MUJOCO_GL`` once, when it is first imported, and PyOpenGL cannot switch
platform afterwards, so the choice (EGL, else OSMesa) is made up front. EGL is probed with
plain ctypes (no PyOpenGL import): it must expose a device display that initialises, as
mujoco.egl needs. An explicit ``MUJOCO_GL`` in the environment always wins.
"""
import ctypes
import ctypes.util
import logging
import os
import sys

LOG = logging.getLogger(__name__)
EGL_PLATFORM_DEVICE_EXT = 0x313F


def egl_works():
    """Whether libEGL has a device display that initialises (Mesa llvmpipe counts)."""
    try:
        egl = ctypes.CDLL(ctypes.util.find_library('EGL') or 'libEGL.so.1')
    except OSError:
        return False
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    query_ptr = egl.eglGetProcAddress(b'eglQueryDevicesEXT')
    display_ptr = egl.eglGetProcAddress(b'eglGetPlatformDisplayEXT')
    if not query_ptr or not display_ptr:
        return False
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                             ctypes.POINTER(ctypes.c_int))(query_ptr)
    get_display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p,
                                   ctypes.c_void_p)(display_ptr)
    egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    egl.eglTerminate.argtypes = [ctypes.c_void_p]
    devices = (ctypes.c_void_p * 8)()
    count = ctypes.c_int(0)
    if not query(8, devices, ctypes.byref(count)):
        return False
    for i in range(count.value):
        display = get_display(EGL_PLATFORM_DEVICE_EXT, devices[i], None)
        if display and egl.eglInitialize(display, None, None):
            egl.eglTerminate(display)
            return True
    return False


def select_gl_backend():
    """Set ``MUJOCO_GL`` to 'egl' or 'osmesa' unless the user set it; return the choice.

    Rendering needs Debian's libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri (EGL) or
    libosmesa6 (OSMesa).
    """
    if os.environ.get('MUJOCO_GL'):
        return os.environ['MUJOCO_GL']
    if 'mujoco' in sys.modules:
        LOG.warning('mujoco was imported before dial_ros.sim with MUJOCO_GL unset: its GL '
                    'backend is already fixed (GLFW, which needs a display); import '
                    'dial_ros.sim first or set MUJOCO_GL=egl')
    backend = 'egl'
    # The EGL probe costs about 0.3 s, so it only runs when there is a fallback to take.
    if ctypes.util.find_library('OSMesa') and not egl_works():
        backend = 'osmesa'
        LOG.info('EGL unavailable, rendering with OSMesa')
    os.environ['MUJOCO_GL'] = backend
    return backend


def release_current_context():
    """Detach the current GL context from this thread, so another thread can render next.

    EGL and OSMesa contexts are bound to the thread that made them current; mujoco's
    Renderer makes its context current before each frame but never releases it, so a
    second thread (say, a ROS executor's worker) would fail with EGL_BAD_ACCESS.
    """
    backend = os.environ.get('MUJOCO_GL', '').lower()
    if backend == 'egl':
        from mujoco import egl
        if egl.EGL_DISPLAY is not None:
            egl.EGL.eglMakeCurrent(egl.EGL_DISPLAY, egl.EGL.EGL_NO_SURFACE,
                                   egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_CONTEXT)
    elif backend == 'osmesa':
        from OpenGL import GL, osmesa
        osmesa.OSMesaMakeCurrent(None, None, GL.GL_FLOAT, 0, 0)
