"""Episodes on the embedded sim, one after another, each with a video (entry point ``episodes``).

    scripts/run.sh                  # the humanoid launch with episodes:=true starts it
    python -m dial_ros.nodes.episodes --ros-args -p run_dir:=runs -p episode_timeout_s:=15

Runs policy episodes through the graph's interfaces the way ``python -m dial_ros.evaluate``
does (``dial_ros.evaluate.episodes.EpisodeRunner``: the controller deactivated, the seed
set, /sim/reset, ``settle_s``, the controller activated, judged by /sim/task_success and
/sim/task_progress or ``episode_timeout_s``), and logs one line per episode (seed, outcome,
time, task completion) and a summary at exit (Ctrl-C or the launch's ``duration:=``).

Each episode's head camera (/camera/head/image_raw), from the reset to its end, goes to
``<run_dir>/<YYYYmmdd-HHMMSS>/episode_NNNN_seed_S.mp4`` at the camera rate (H.264 yuv420p),
with the newest foresight panel (``foresight_topic``) beside it when one has come from a
live publisher by the episode's first frame (see dial_ros.evaluate.watch).

Not a spinning node: it owns its context and spins while it waits (a GraphClient), like the
evaluation. It must not run beside ``python -m dial_ros.evaluate``, which drives the same
controller and sim (that tool's launch has ``episodes:=false``).
"""
import dataclasses
import logging
import pathlib
import signal
import sys
import time

import numpy as np

from sensor_msgs.msg import Image

from dial_ros.evaluate.episodes import EpisodeRunner
from dial_ros.evaluate.graph import GraphClient
from dial_ros.evaluate.watch import EpisodeVideo, episode_line, playable_codec, summary_line
from dial_ros.nodes import common
from dial_ros.schema import setting

DEFAULT_CAMERA_HZ = 20.0  # the sim's default rate, where its parameters cannot be read


@dataclasses.dataclass
class Params:
    """Parameters of the episode runner (ROS parameters; see common.declare_params)."""

    episode_timeout_s: float = setting(15.0, 'an episode without success ends (a failure) '
                                       'after this long', low=1.0, high=600.0, unit='s')
    settle_s: float = setting(1.0, 'between a reset and the release of the controller (the '
                              'pipeline sees the new scene)', low=0.0, high=30.0, unit='s')
    seed: int = setting(100000, 'seed of the first episode; each next one counts up (100000: '
                        "the evaluation's seen split)", low=0, high=2**31 - 1)
    run_dir: str = setting('runs', 'each run writes its videos into <run_dir>/'
                           '<YYYYmmdd-HHMMSS>/ (relative: to the working directory; read at '
                           'start-up)', read_only=True)
    video: bool = setting(True, 'write an MP4 per episode (head camera + foresight panel)')
    foresight_topic: str = setting('/dial/foresight/image', 'sensor_msgs/Image shown beside '
                                   'the camera while it has a publisher (read at start-up)',
                                   read_only=True)


class EpisodesNode:
    """Runs episodes until interrupted; see the module docstring."""

    def __init__(self, args=None):
        # no rclpy signal handlers: Ctrl-C raises KeyboardInterrupt here with the context
        # still up, so the open video is closed and the summary logged through the node
        self.client = GraphClient(None, 'episodes', args, handle_signals=False)
        node = self.client.node
        self.log = node.get_logger()
        self.params = p = common.declare_params(node, Params())
        self.run_dir = (pathlib.Path(p.run_dir).expanduser()
                        / time.strftime('%Y%m%d-%H%M%S')).resolve()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SystemExit(f'episodes: run_dir: cannot create {self.run_dir} ({err})') from None
        self.codec = None  # the first video picks it (video can be switched on live)
        self.results, self.video, self.panel = [], None, None  # panel: (stamp s, rgb)
        self.episode_stamp = None  # stamp of the current video's first camera frame
        self.current, self.cpu_encode = None, 0.0  # (index, seed) of the running episode
        self.throttle = common.Throttle(self.log)
        node.create_subscription(Image, common.TOPIC_IMAGE, self._on_camera, common.QOS_SENSOR)
        node.create_subscription(Image, p.foresight_topic, self._on_panel, common.QOS_SENSOR)
        self.tic, self.cpu0 = time.monotonic(), time.process_time()
        self.log.info(f'run folder {self.run_dir}: one line and one '
                      f'{"MP4" if p.video else "(no video)"} per episode')

    # --- images ------------------------------------------------------------------------
    def _rgb(self, msg, what):
        try:
            return common.image_to_rgb(msg)
        except ValueError as err:
            self.throttle('error', what, f'{what}: {err}; frame skipped')
            return None

    def _on_panel(self, msg):
        rgb = self._rgb(msg, self.params.foresight_topic)
        if rgb is not None:
            self.panel = (common.stamp_to_sec(msg.header.stamp), rgb)

    def _panel_for(self, stamp_s):
        """The newest panel if it shows this episode, else a black one of its size: a panel
        is stamped with its intent's frame and comes ~1 s late, so for the first second of an
        episode the newest one shows the previous episode."""
        if self.panel is None:
            return None
        if self.episode_stamp is None:
            self.episode_stamp = stamp_s  # the episode's first frame
        panel_stamp, rgb = self.panel
        return rgb if panel_stamp >= self.episode_stamp else np.zeros_like(rgb)

    def _on_camera(self, msg):
        if self.video is not None:
            rgb = self._rgb(msg, common.TOPIC_IMAGE)
            if rgb is None:
                return
            try:
                stamp = common.stamp_to_sec(msg.header.stamp)
                self.video.add(rgb, self._panel_for(stamp), stamp)
            except Exception as err:  # noqa: BLE001 - a full disk or codec error: no video
                self.log.error(f'{self.video.path}: {err}; the rest of this episode is not '
                               'recorded')
                try:
                    self._close_video()
                except Exception:  # noqa: BLE001 - the file is broken already
                    pass

    def _camera_hz(self):
        """The sim's camera rate (its parameters), the frame rate of the videos."""
        try:
            sim = self.client.get_parameters('sim', ['control_rate_hz', 'camera_rate_hz'])
        except (TimeoutError, RuntimeError) as err:
            self.log.warning(f'sim parameters unreadable ({err}): videos at '
                             f'{DEFAULT_CAMERA_HZ} fps')
            return DEFAULT_CAMERA_HZ
        rate, camera = sim['control_rate_hz'], sim['camera_rate_hz']
        return rate / max(1, round(rate / camera)) if camera else float(rate)

    # --- episodes ------------------------------------------------------------------------
    def run(self):
        p = self.params
        runner = EpisodeRunner(self.client, 'policy', p.episode_timeout_s, p.settle_s,
                               smoothness=False)
        runner.wait_ready()
        fps = self._camera_hz()
        self.tic, self.cpu0 = time.monotonic(), time.process_time()  # the summary's CPU
        index, seed = 0, p.seed
        while True:
            runner.timeout_s, runner.settle_s = p.episode_timeout_s, p.settle_s  # live
            self.current = (index, seed)
            runner.reset_sim(seed)
            if p.video:
                self.codec = self.codec or playable_codec()
                self.panel = self.panel if self._has_panel() else None
                self.episode_stamp = None
                self.video = EpisodeVideo(self.run_dir / f'episode_{index:04d}_seed_{seed}.mp4',
                                          fps, self.codec)
            result = runner.run_policy()
            self.results.append(result)
            self.log.info(episode_line(index, seed, result, self._close_video()))
            self.current = None
            index, seed = index + 1, seed + 1

    def _has_panel(self):
        return self.client.node.count_publishers(self.params.foresight_topic) > 0

    def _close_video(self):
        video, self.video = self.video, None
        if video is None:
            return None
        try:
            info = video.close()
        finally:
            self.cpu_encode += video.encode_s
        return info

    def finish(self):
        """Close the video of an episode cut short (its line says so); log the summary."""
        if self.current is not None:
            try:
                info = self._close_video()
            except Exception as err:  # noqa: BLE001 - a write cut short by the interrupt
                self.log.warning(f"the interrupted episode's video: {err}")
                info = None
            self.log.info(episode_line(*self.current, None, info))
        wall, cpu = time.monotonic() - self.tic, time.process_time() - self.cpu0
        self.log.info(summary_line(self.results, self.run_dir, wall, cpu)
                      + f', of it encoding {self.cpu_encode:.1f} s')


def main(args=None):
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGTERM, _interrupt)
    node = EpisodesNode(sys.argv if args is None else args)
    code = 0
    try:
        node.run()
    except KeyboardInterrupt:
        pass
    except (TimeoutError, RuntimeError, ValueError) as err:  # the graph is not up, a refusal
        node.log.error(str(err))
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        node.finish()
        node.client.close()
    return code


def _interrupt(*_):
    raise KeyboardInterrupt()


if __name__ == '__main__':
    sys.exit(main())
