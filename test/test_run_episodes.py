"""A run you can watch: episode videos (camera | foresight panel), the launch's episode
runner, and ``scripts/run.sh`` end to end (episode lines, a summary, playable MP4s)."""
import pathlib
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from dial_ros.data.video import decode_all
from dial_ros.evaluate.watch import EpisodeVideo, compose, episode_line, playable_codec
from rosgraph import PYTHON, Probe, ROOT, child_env, domain_id, start, stop

EPISODE = re.compile(r'episode (\d+) seed (\d+): (success|failure \(timeout\)) in ([\d.]+) s, '
                     r'task completion (\d+) % -> (\S+\.mp4) \((\d+) frames (\d+)x(\d+)\)')


def frames(n, h=224, w=224, seed=0):
    """Smooth colour gradients, a different one per frame (what a video codec keeps)."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    out = [np.stack([(x * a + y * b + c) % 200 for a, b, c in rng.uniform(0.1, 0.6, (3, 3))
                     * [1, 1, 300]], axis=-1) for _ in range(n)]
    return np.asarray(out, np.uint8)


def test_compose_puts_the_panel_beside_the_camera_at_its_height():
    camera, panel = frames(1)[0], frames(1, 112, 335, seed=1)[0]
    assert compose(camera).shape == (224, 224, 3)
    both = compose(camera, panel)
    assert both.shape == (224, 224 + 670, 3)   # 335 px scaled x2 = 670: even already
    assert np.array_equal(both[:, :224], camera)
    # no foresight yet in a layout with a panel: black, same size
    blank = compose(camera, None, panel_width=671)
    assert blank.shape == (224, 224 + 672, 3) and not blank[:, 224:].any()
    with pytest.raises(ValueError, match='panel: expected uint8'):
        compose(camera, panel.astype(np.float32))


def test_an_episode_video_decodes_to_its_frames_as_h264_yuv420p(tmp_path):
    import av
    codec = playable_codec()
    video = EpisodeVideo(tmp_path / 'e.mp4', 20.0, codec)
    cams, panel = frames(6), frames(1, 224, 224, seed=2)[0]
    video.add(cams[0])             # the first frame fixes the layout: camera only
    for cam in cams[1:]:
        video.add(cam, panel)      # a panel appearing later waits for the next episode
    info = video.close()
    assert info == {'path': str(tmp_path / 'e.mp4'), 'frames': 6, 'width': 224,
                    'height': 224}
    decoded = decode_all(tmp_path / 'e.mp4')
    assert decoded.shape == (6, 224, 224, 3)
    error = np.abs(decoded.astype(int)[:, None] - cams.astype(int)[None]).mean(axis=(2, 3, 4))
    assert (error.argmin(axis=1) == np.arange(6)).all() and error.diagonal().max() < 5, error
    with av.open(str(tmp_path / 'e.mp4')) as container:
        stream = container.streams.video[0]
        if codec == 'libx264':
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == \
                ('h264', 'yuv420p')
        assert float(stream.average_rate) == 20.0
    with_panel = EpisodeVideo(tmp_path / 'p.mp4', 20.0, codec)
    with_panel.add(cams[0], panel)
    with_panel.add(cams[1])        # no panel frame (yet): black beside the camera
    assert with_panel.close()['width'] == 448
    assert decode_all(tmp_path / 'p.mp4').shape == (2, 224, 448, 3)
    assert EpisodeVideo(tmp_path / 'none.mp4', 20.0, codec).close()['frames'] == 0
    # stamped frames: a lost frame leaves a gap (real time), a repeated stamp is dropped
    timed = EpisodeVideo(tmp_path / 't.mp4', 20.0, codec)
    for cam, stamp in zip(cams, (100.0, 100.051, 100.199, 100.2, 100.25)):
        timed.add(cam, None, stamp)
    assert timed.close()['frames'] == 4
    with av.open(str(tmp_path / 't.mp4')) as container:
        times = [round(f.time, 3) for f in container.decode(video=0)]
    assert times == [0.0, 0.05, 0.2, 0.25]


def test_episode_lines_say_seed_outcome_time_and_completion():
    line = episode_line(3, 100003, {'success': True, 'completion_s': 6.25, 'progress': 1.0,
                                    'duration_s': 7.3},
                        {'path': 'runs/x/e.mp4', 'frames': 146, 'width': 224, 'height': 224})
    assert EPISODE.fullmatch(line).groups() == ('3', '100003', 'success', '6.2', '100',
                                                'runs/x/e.mp4', '146', '224', '224')
    assert episode_line(4, 9, {'success': False, 'completion_s': None, 'progress': 0.3333,
                               'duration_s': 15.02}) == \
        'episode 4 seed 9: failure (timeout) in 15.0 s, task completion 33 %'
    assert episode_line(5, 10, None) == 'episode 5 seed 10: interrupted'


def test_the_launch_runs_episodes_only_when_asked_on_the_sim_with_the_policy():
    from test_launch_settings import launch_plan
    assert 'episodes' not in launch_plan()
    plan = launch_plan('episodes:=true', 'episode_timeout_s:=4', 'run_dir:=/videos')
    assert plan['episodes'] == ['config/humanoid.yaml',
                                {'episode_timeout_s': 4.0, 'run_dir': '/videos'}]
    for other in ('driver:=expert', 'sim:=false'):
        assert 'episodes' not in launch_plan('episodes:=true', other), other


def test_the_evaluation_turns_the_launch_episodes_off():
    """``python -m dial_ros.evaluate`` drives the episodes itself: never two runners."""
    from dial_ros.evaluate.__main__ import launch_arguments, parser
    args = parser().parse_args(['--episodes', '1'])
    assert 'episodes:=false' in launch_arguments(args, 'params.yaml')


def publish_panel(probe, topic, hz=5.0):
    """A foresight panel (sensor_msgs/Image rgb8, 112 x 168) on ``topic`` at ``hz``."""
    from sensor_msgs.msg import Image

    from dial_ros.codecs import fill_image
    from dial_ros.nodes.qos import QOS_SENSOR
    pub = probe.node.create_publisher(Image, topic, QOS_SENSOR)
    panel = np.full((112, 168, 3), (30, 200, 90), np.uint8)
    probe.node.create_timer(1.0 / hz, lambda: pub.publish(fill_image(Image(), panel,
                                                                     time.time())))


@pytest.mark.ros
@pytest.mark.slow
def test_run_sh_runs_episodes_and_writes_playable_videos(tmp_path):
    """scripts/run.sh with a 2 s episode timeout: episode lines, a summary at Ctrl-C (what
    duration:= also sends; 300 s is only the safety net) and MP4s of the head camera with a
    foresight panel beside it (published here, as the foresight node would)."""
    domain = domain_id('run_sh')
    log = tmp_path / 'run.log'
    probe = Probe(domain)
    publish_panel(probe, '/dial/foresight/image')
    proc = start([str(ROOT / 'scripts' / 'run.sh'), 'duration:=300', 'episode_timeout_s:=2',
                  f'run_dir:={tmp_path / "runs"}'], domain, log)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(EPISODE.findall(log.read_text())) >= 2:
                break
            time.sleep(1.0)
        found = EPISODE.findall(log.read_text())
        assert len(found) >= 2, log.read_text()[-5000:]
    finally:
        stop(proc, signal.SIGINT, timeout=60)
        probe.close()
    text = log.read_text()
    folder = re.search(r'run folder (\S+):', text).group(1)
    assert pathlib.Path(folder).parent == tmp_path / 'runs'
    assert re.search(r'run \S+: \d+ episodes, \d+ successes \(\d+ %\), mean task completion '
                     r'\d+ %.*% of a core', text), text[-3000:]
    seeds = [int(f[1]) for f in found]
    assert seeds[1] == seeds[0] + 1
    for index, seed, outcome, seconds, completion, path, count, width, height in found[:2]:
        assert pathlib.Path(path).parent == pathlib.Path(folder)
        assert outcome == 'success' or float(seconds) >= 2.0
        video = decode_all(path)
        assert video.shape == (int(count), int(height), int(width), 3)
        # the head camera (224 px) with the panel beside it (scaled to 224 px high)
        assert int(count) > 0 and int(height) == 224 and int(width) > 224
        assert video[:, :, 232:].mean() > 20 and video[:, :, :224].std() > 10  # both drawn


@pytest.mark.ros
def test_a_run_dir_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / 'file').write_text('')
    out = subprocess.run([PYTHON, '-m', 'dial_ros.nodes.episodes', '--ros-args', '-p',
                          f'run_dir:={tmp_path / "file"}'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=child_env(domain_id('episodes_bad')))
    assert out.returncode != 0
    assert f'run_dir: cannot create {tmp_path / "file"}/' in out.stderr, out.stderr[-2000:]
