"""dial_ros.procs: the environment of a child, stop's escalation, the process group, orphans."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

from dial_ros import procs

# A child that ignores the signals named in argv[2:], starts a grandchild in its group,
# says "ready <grandchild pid>" and sleeps. argv[1] is a token of this test run: the
# orphan search finds our processes by it, never another test's.
STUBBORN = textwrap.dedent('''
    import signal, subprocess, sys, time
    # a background shell starts its jobs with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: put it back, so that only argv's choice decides
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in sys.argv[2:]:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)',
                                   sys.argv[1]])
    print('ready', grandchild.pid, flush=True)
    time.sleep(600)
''')
TOKEN = f'test-procs-{uuid.uuid4().hex}'


def start_stubborn(*ignored, domain=150):
    proc = procs.start([sys.executable, '-c', STUBBORN, TOKEN, *ignored], domain,
                       stdout=subprocess.PIPE, text=True)
    words = proc.stdout.readline().split()
    assert words[:1] == ['ready'], words
    return proc, int(words[1])


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(') ')[1][0] != 'Z'
    except FileNotFoundError:
        return False


def gone(pid, timeout=30.0):
    """True once ``pid`` has died (a signal is delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def test_ros_env_is_localhost_on_its_own_domain():
    env = procs.ros_env(123, base={'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET',
                                   'OMP_NUM_THREADS': '4'}, EXTRA=1)
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert env['ROS_DOMAIN_ID'] == '123' and env['EXTRA'] == '1'
    assert env['OMP_NUM_THREADS'] == '4' and env['PYTHONUNBUFFERED'] == '1'
    assert procs.ros_env(5, base={})['OMP_NUM_THREADS'] == '1'
    assert 100 <= procs.new_domain_id('x') <= 230


def test_child_runs_with_the_environment_and_writes_its_log(tmp_path):
    log = tmp_path / 'child.log'
    code = ('import os; print(os.environ["ROS_DOMAIN_ID"], '
            'os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"])')
    proc = procs.start([sys.executable, '-c', code], 177, log,
                       env=dict(os.environ, ROS_DOMAIN_ID='1'))
    assert proc.wait(60) == 0 and procs.stop(proc) == 0
    assert log.read_text().split() == ['177', 'LOCALHOST']


def test_stop_escalates_sigint_sigterm_sigkill_and_kills_the_group():
    proc, grandchild = start_stubborn()
    assert procs.stop(proc, timeout=10.0) == -signal.SIGINT   # KeyboardInterrupt
    assert gone(grandchild)
    proc, grandchild = start_stubborn('SIGINT')
    assert procs.stop(proc, timeout=0.5) == -signal.SIGTERM
    assert gone(grandchild)
    proc, grandchild = start_stubborn('SIGINT', 'SIGTERM')
    assert procs.stop(proc, timeout=0.5, term_timeout=0.5) == -signal.SIGKILL
    assert gone(grandchild)


def found(pids, domain, timeout=30.0):
    """Wait until the processes of ``TOKEN`` in ``domain`` are ``pids`` (the venv's python
    re-executes itself at start-up, when /proc may not show it for a moment)."""
    deadline = time.monotonic() + timeout
    while set(procs.pids_in_domain(TOKEN, domain)) != set(pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_orphans_are_found_and_killed_by_domain():
    proc, grandchild = start_stubborn(domain=211)
    try:
        assert found({proc.pid, grandchild}, 211)
        assert not procs.pids_in_domain(TOKEN, 212)
        os.kill(proc.pid, signal.SIGKILL)        # the launcher dies; its child lingers
        proc.wait()
        assert found({grandchild}, 211)
        assert procs.kill_in_domain(TOKEN, 211) == [grandchild]
        assert gone(grandchild)
    finally:
        procs.stop(proc)
