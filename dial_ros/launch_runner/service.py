"""The supervisor behind the launch stand-ins: visits a description, runs its processes.

Every process runs in its own process group with its output prefixed by ``[label]``; on
shutdown (a ``Shutdown`` action, SIGINT or SIGTERM to the runner, an exception) each group gets
SIGINT, then SIGTERM after ``sigterm_timeout`` and SIGKILL after ``sigkill_timeout`` more
seconds. Log lines follow ``ros2 launch``.
"""
import asyncio
import datetime
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback

from .shim import LaunchContext, LOGGER_PREFIX
from .shim_actions import visit_entities

logger = logging.getLogger(LOGGER_PREFIX + 'launch')
ROS_ENV_KEYS = ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID')


class ShimLaunchService:
    """Visit a shim launch description and supervise the processes it starts."""

    def __init__(self, *, launch_file, arguments=None, argv=()):
        self.launch_file = os.path.abspath(launch_file)
        self.arguments = dict(arguments or {})
        self.argv = list(argv)
        self.is_shutdown = False
        self.return_code = 0
        self.temp_dir = None
        self._loop = self._done = self._shutdown_event = self._log_file = None
        self._active = 0
        self._running = {}  # pid -> (spec, process, timer handles)
        self._timers = set()
        self._tasks = set()  # strong references: the loop keeps only weak ones
        self._escalations = 0

    def run(self, description):
        """Run until every process has exited and no timer is pending; return the exit code."""
        import dial_ros
        dial_ros.apply_ros_env_defaults()  # children inherit these unless set explicitly
        self.temp_dir = tempfile.mkdtemp(prefix='dial_ros_launch_')
        try:
            return asyncio.run(self._main(description, LaunchContext(self, self.argv)))
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            if self._log_file:
                self._log_file.close()

    async def _main(self, description, context):
        self._loop = asyncio.get_running_loop()
        self._done, self._shutdown_event = asyncio.Event(), asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(signum, self._on_signal, signum)
        context.launch_configurations.update(self.arguments)
        context.extend_locals({'current_launch_file_path': self.launch_file,
                               'current_launch_file_directory': os.path.dirname(self.launch_file)})
        self._safely(visit_entities, [description], context)
        self._check_idle()
        await self._done.wait()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(signum)
        return self.return_code

    def _safely(self, function, *args):
        try:
            function(*args)
        except Exception as exc:
            logger.error('Caught exception in launch (see debug for traceback): %s', exc)
            logger.debug(traceback.format_exc())
            self.return_code = 1
            self.shutdown(reason='exception in launch')

    def _check_idle(self):
        if self._active == 0 and not self._timers:
            self._done.set()

    def call_later(self, delay, callback):
        """Run ``callback`` after ``delay`` seconds unless the launch shuts down first."""
        def fire():
            self._timers.discard(handle)
            if not self.is_shutdown:
                self._safely(callback)
            self._check_idle()
        handle = self._loop.call_later(max(0.0, delay), fire)
        self._timers.add(handle)

    def shutdown(self, reason='reason not given'):
        """Cancel timers and stop every process (SIGINT, then SIGTERM, then SIGKILL)."""
        if self.is_shutdown:
            return
        self.is_shutdown = True
        self._shutdown_event.set()
        logger.info('shutting down: %s', reason)
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        for pid in list(self._running):
            self._stop(pid)
        self._check_idle()

    def _on_signal(self, signum):
        name = signal.Signals(signum).name
        if not self.is_shutdown:
            logger.warning('user interrupted with %s', 'ctrl-c (SIGINT)' if
                           signum == signal.SIGINT else name)
            self.shutdown(reason=f'{name} received')
            return
        self._escalations += 1  # impatient user: skip the grace periods
        escalation = signal.SIGTERM if self._escalations == 1 else signal.SIGKILL
        logger.warning('%s received during shutdown, sending %s to every process', name,
                       escalation.name)
        for pid in list(self._running):
            self._send(pid, escalation)

    def spawn(self, spec):
        """Start a process described by ``spec`` (see ``shim_ros.ExecuteProcess``)."""
        if self.is_shutdown:
            return
        self._active += 1
        task = self._loop.create_task(self._supervise(spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, spec):
        try:
            retries = 0
            while True:
                code = await self._run_once(spec)
                if code is None or not spec.respawn or self.is_shutdown:
                    break
                if 0 <= spec.respawn_max_retries <= retries:
                    break
                retries += 1
                try:
                    await asyncio.wait_for(self._shutdown_event.wait(), spec.respawn_delay)
                except asyncio.TimeoutError:
                    pass
                if self.is_shutdown:
                    break
        finally:
            self._active -= 1
            self._check_idle()

    async def _run_once(self, spec):
        if self.is_shutdown:  # shut down before the process could start: do not start it
            return None
        log = logging.getLogger(LOGGER_PREFIX + spec.label)
        env = dict(spec.env)
        for key in ROS_ENV_KEYS:  # DDS discovery stays on this machine unless set explicitly
            env.setdefault(key, os.environ[key])
        env.setdefault('PYTHONUNBUFFERED', '1')
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd=spec.cwd, start_new_session=True)
        except OSError as exc:
            log.error("exception occurred while executing process %s: %s", spec.cmd, exc)
            return None
        pid = process.pid
        log.info('process started with pid [%d]', pid)
        self._running[pid] = (spec, process, [])
        if self.is_shutdown:
            self._stop(pid)
        pumps = [self._loop.create_task(self._pump(process.stdout, spec, False)),
                 self._loop.create_task(self._pump(process.stderr, spec, True))]
        code = await process.wait()
        _, pending = await asyncio.wait(pumps, timeout=1.0)  # grandchildren may hold the pipes
        for task in pending:
            task.cancel()
        for handle in self._running.pop(pid)[2]:
            handle.cancel()
        if code == 0:
            log.info('process has finished cleanly [pid %d]', pid)
        else:
            log.error("process has died [pid %d, exit code %d, cmd '%s'].", pid, code,
                      ' '.join(spec.cmd))
        if spec.on_exit is not None:
            self._safely(spec.on_exit, code, pid)
        return code

    def _stop(self, pid):
        spec, _, timers = self._running[pid]
        self._send(pid, signal.SIGINT)
        timers.append(self._loop.call_later(spec.sigterm_timeout, self._escalate, pid,
                                            signal.SIGINT, signal.SIGTERM))

    def _escalate(self, pid, previous, signum):
        if pid not in self._running:
            return
        spec, _, timers = self._running[pid]
        timeout = spec.sigterm_timeout if signum == signal.SIGTERM else spec.sigkill_timeout
        logging.getLogger(LOGGER_PREFIX + spec.label).error(
            "process[%s] failed to terminate '%s' seconds after receiving '%s', escalating to "
            "'%s'", spec.label, timeout, previous.name, signum.name)
        self._send(pid, signum)
        if signum == signal.SIGTERM:
            timers.append(self._loop.call_later(spec.sigkill_timeout, self._escalate, pid,
                                                signal.SIGTERM, signal.SIGKILL))

    def _send(self, pid, signum):
        if pid not in self._running:
            return
        spec, process, _ = self._running[pid]
        logging.getLogger(LOGGER_PREFIX + spec.label).info(
            "sending signal '%s' to process[%s]", signum.name, spec.label)
        try:
            os.killpg(pid, signum)  # the process group: the node and anything it started
        except ProcessLookupError:
            pass
        except PermissionError:
            process.send_signal(signum)

    async def _pump(self, stream, spec, is_stderr):
        pending = b''
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b'\n')
            for line in lines:
                self._emit(spec, line, is_stderr)
        if pending:
            self._emit(spec, pending, is_stderr)

    def _emit(self, spec, raw, is_stderr):
        line = '[{}] {}'.format(spec.label, raw.decode(errors='replace').rstrip('\r'))
        logged = spec.output != 'screen' and self._write_log(line)
        if spec.output in ('screen', 'both') or is_stderr or not logged:
            stream = sys.stderr if is_stderr else sys.stdout
            try:
                stream.write(line + '\n')
                stream.flush()
            except (OSError, ValueError):  # our own output is gone: keep draining the pipe
                pass

    def _write_log(self, line):
        """Append to <ROS_LOG_DIR>/<stamp>-<host>-<pid>/launch.log; False if impossible."""
        if self._log_file is None:
            base = os.environ.get('ROS_LOG_DIR') or os.path.join(
                os.environ.get('ROS_HOME') or os.path.expanduser('~/.ros'), 'log')
            stamp = datetime.datetime.now().strftime('%Y-%m-%d-%H-%M-%S-%f')
            directory = os.path.join(base, f'{stamp}-{socket.gethostname()}-{os.getpid()}')
            try:
                os.makedirs(directory, exist_ok=True)
                self._log_file = open(os.path.join(directory, 'launch.log'), 'a',
                                      encoding='utf-8')
                logger.info('All log files can be found below %s', directory)
            except OSError as exc:
                logger.warning('cannot write the launch log (%s); output goes to the screen',
                               exc)
                self._log_file = False
        if self._log_file:
            self._log_file.write(line + '\n')
            self._log_file.flush()
        return bool(self._log_file)
