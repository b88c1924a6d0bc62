"""The humanoid launch as a child process of a tool (evaluation, demo recording).

The child gets its own ROS domain (never the interactive default 77), discovery on
localhost and one torch thread per process; it runs in its own process group so that a stop
reaches every node.
"""
import os
import pathlib
import signal
import subprocess
import sys

import yaml

from dial_ros import paths

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def write_params(path, overrides):
    """config/humanoid.yaml with ``{node: {parameter: value}}`` overrides, written to
    ``path`` for the launch's ``config:=`` argument; returns ``path``."""
    data = yaml.safe_load(paths.config_file('humanoid.yaml').read_text())
    for node, values in overrides.items():
        data.setdefault(node, {}).setdefault('ros__parameters', {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child_env(domain):
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
                OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'), PYTHONUNBUFFERED='1')


def start_launch(arguments, log_path, domain, launch_file='humanoid.launch.py'):
    """Start ``launch_file`` with ``name:=value`` ``arguments``; output goes to ``log_path``."""
    cmd = [sys.executable, '-m', 'dial_ros.launch_runner', 'dial_ros', launch_file,
           *arguments]
    log = open(log_path, 'w')
    return subprocess.Popen(cmd, env=child_env(domain), stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)


def stop_launch(proc, timeout=30.0):
    """Ctrl-C to the whole launch (nodes finalise: the recorder closes its bag), then kill."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
    return proc.returncode
