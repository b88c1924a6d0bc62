"""Child processes on a ROS graph of their own: start, stop, find; no rclpy.

Every child gets localhost-only discovery and its own ROS_DOMAIN_ID (the house rule: DDS
discovery never leaves the machine, and separate runs never see each other), one torch
thread unless told otherwise, and unbuffered output. It runs in its own process group, so
that a stop reaches every process it started (a launch and its nodes). ``stop`` escalates
SIGINT -> SIGTERM -> SIGKILL, each with a timeout, and reaps the child.
"""
import os
import pathlib
import random
import signal
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def new_domain_id(tag=''):
    """A ROS_DOMAIN_ID in 100-230 for this process, tag and moment (never the default 77)."""
    return random.Random(f'{tag}-{os.getpid()}-{time.time_ns()}').randint(100, 230)


def ros_env(domain, base=None, **extra):
    """Environment of a child on ``domain``: localhost discovery, unbuffered, 1 torch thread.

    ``base``: the environment to start from (default ``os.environ``); ``extra`` wins.
    """
    env = dict(os.environ if base is None else base)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_DOMAIN_ID=str(int(domain)),
               PYTHONUNBUFFERED='1')
    env.setdefault('OMP_NUM_THREADS', '1')
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(cmd, domain, log=None, env=None, cwd=ROOT, **popen):
    """Start ``cmd`` on ``domain`` in a new process group; returns the Popen.

    ``log``: a file path for stdout and stderr together (None: discarded unless ``popen``
    sets ``stdout``, e.g. ``stdout=subprocess.PIPE, text=True`` to read its lines).
    ``env``: a full environment (default ``ros_env(domain)``); its discovery range and
    domain are forced to localhost and ``domain`` all the same.
    """
    env = ros_env(domain, base=env)
    if log is not None:
        with open(log, 'w') as out:  # the child keeps its own descriptor
            return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, **popen)
    popen.setdefault('stdout', subprocess.DEVNULL)
    return subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True, **popen)


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc, sig=signal.SIGINT, timeout=30.0, term_timeout=10.0, kill_timeout=10.0):
    """Stop the child's whole process group; returns its exit code.

    ``sig`` first (SIGINT: nodes finalise, the recorder closes its bag) and ``timeout`` s,
    then SIGTERM and ``term_timeout`` s, then SIGKILL. A child that already exited is only
    reaped, and what is left of its group is killed.
    """
    steps = [(sig, timeout)]
    if sig not in (signal.SIGTERM, signal.SIGKILL):
        steps.append((signal.SIGTERM, term_timeout))
    if sig != signal.SIGKILL:
        steps.append((signal.SIGKILL, kill_timeout))
    for step, wait_s in steps:
        if proc.poll() is not None:
            break
        _signal_group(proc, step)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    else:
        proc.wait()
    _signal_group(proc, signal.SIGKILL)  # grandchildren the child left behind
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def pids_in_domain(module, domain):
    """Pids of live processes running ``python -m <module>`` with ROS_DOMAIN_ID=``domain``.

    Finds what a killed launcher left behind (its nodes run in the same domain).
    """
    found = []
    for entry in pathlib.Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / 'cmdline').read_bytes().split(b'\0')
            environ = (entry / 'environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if module.encode() in cmdline and f'ROS_DOMAIN_ID={domain}'.encode() in environ:
            found.append(int(entry.name))
    return found


def kill_in_domain(module, domain):
    """SIGKILL every ``python -m <module>`` left running in ``domain``; their pids."""
    pids = pids_in_domain(module, domain)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
