"""Foresight you can look at: the image decoder, the frame/intent pairing, the panel node.

The decoder round trip runs the bundled decoder on sim frames of a seed no demo used (held
out) and must beat the mean-image baseline; the node runs as a real process over DDS.
"""
import time

import numpy as np
import pytest
import torch

from dial_ros.core.foresight_panel import compose_panel, ForesightPairer, LABEL_HEIGHT
from dial_ros.model import foresight_decoder as fd
from dial_ros.paths import bundled_checkpoint

HELD_OUT_SEED = 424_242    # far from the demo seeds (0..) and the evaluation seeds (1e5..)


# --- the decoder -------------------------------------------------------------------------
def test_decoder_shapes_and_clear_errors():
    decoder = fd.ForesightDecoder(fd.DecoderConfig(image_size=64)).eval()
    out = decoder(torch.zeros(2, 64, 64))
    assert out.shape == (2, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
    assert decoder.decode(np.zeros((64, 64))).shape == (64, 64, 3)
    with pytest.raises(ValueError, match=r'tokens: expected shape \(B, 64, 64\)'):
        decoder(torch.zeros(2, 63, 64))
    with pytest.raises(ValueError, match='NaN'):
        decoder.decode(np.full((64, 64), np.nan))
    with pytest.raises(ValueError, match='num_tokens: 60 is not a square grid'):
        fd.DecoderConfig(num_tokens=60).check()
    with pytest.raises(ValueError, match='image_size'):
        fd.DecoderConfig(image_size=32).check()


def test_decoder_saves_and_loads_bit_identical(tmp_path):
    torch.manual_seed(0)
    decoder = fd.ForesightDecoder(fd.DecoderConfig(image_size=64))
    decoder.set_token_stats(np.random.default_rng(0).normal(size=(64, 64)), 2.0)
    decoder.set_mean_image(np.full((64, 64, 3), 90, np.uint8))
    fd.save_decoder(decoder.eval(), tmp_path, note='test')
    loaded = fd.load_decoder(tmp_path)
    tokens = np.random.default_rng(1).normal(size=(3, 64, 64)).astype(np.float32)
    assert np.array_equal(loaded.decode(tokens), decoder.decode(tokens))
    assert loaded.meta['note'] == 'test'


def test_missing_decoder_names_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        fd.load_decoder(tmp_path)
    assert str(tmp_path / fd.WEIGHTS) in str(err.value)
    assert 'python -m dial_ros.train.foresight_decoder' in str(err.value)


def held_out_frames(count=8, every=15):
    """``count`` head-camera frames of a scripted lift on a seed no demo used."""
    import dial_ros.sim  # noqa: F401 - headless GL backend before mujoco
    from dial_ros.sim.expert import ScriptedExpert
    from dial_ros.sim.gr1_env import GR1Sim
    frames = []
    with GR1Sim() as sim:
        expert = ScriptedExpert(sim)
        obs = sim.reset(seed=HELD_OUT_SEED)
        expert.reset(obs)
        while len(frames) < count:
            for _ in range(every):
                obs = sim.step(expert.act(obs))
            frames.append(obs['image'])
    return np.stack(frames)


def test_bundled_decoder_beats_the_mean_image_on_held_out_frames():
    """Ground-truth tokens of unseen frames -> pixels, closer than the training mean image."""
    from dial_ros.model.checkpoint import load_checkpoint
    decoder = fd.load_decoder(fd.decoder_path(bundled_checkpoint()))
    vision = load_checkpoint(bundled_checkpoint(), part='vision').eval()
    frames = held_out_frames()
    with torch.inference_mode():
        tokens = vision.system2.encode_images(frames).float().numpy()
    size = decoder.config.image_size
    truth = fd.resize(frames, size)
    mean_image = (torch.sigmoid(decoder.image_logit).permute(1, 2, 0).numpy() * 255).round()
    decoded = fd.psnr(decoder.decode(tokens), truth)
    baseline = fd.psnr(np.broadcast_to(mean_image, truth.shape), truth)
    assert decoded > baseline + 3.0, (decoded, baseline)
    # the decoder reads the tokens: another frame's tokens decode to a worse picture
    shuffled = fd.psnr(decoder.decode(tokens[::-1]), truth)
    assert decoded > shuffled, (decoded, shuffled)


# --- pairing frames and intents ------------------------------------------------------------
def test_pairer_waits_for_the_later_frame_and_returns_both_frames():
    pairer = ForesightPairer(buffer_s=3.0, tolerance_s=0.02)
    pairer.add_intent(0.10, 0.8, 'intent')
    for k in range(18):          # frames at 0.00 .. 0.85 s: the later one (0.90 s) not yet
        pairer.add_frame(k * 0.05, k)
    assert pairer.pop_ready() is None
    pairer.add_frame(0.90, 18)
    stamp, horizon_s, intent, now, later = pairer.pop_ready()
    assert (stamp, horizon_s, intent, now, later) == (0.10, 0.8, 'intent', 2, 18)
    assert pairer.pop_ready() is None   # each intent is shown once


def test_pairer_shows_the_newest_ready_intent_and_forgets_on_a_clock_reset():
    pairer = ForesightPairer(buffer_s=3.0, tolerance_s=0.02)
    for k in range(40):
        pairer.add_frame(10 + k * 0.05, k)
    for k in (0, 4, 8, 30):   # 30 (11.5 s + 0.8 s) is still to come
        pairer.add_intent(10 + k * 0.05, 0.8, k)
    assert pairer.pop_ready()[2] == 8
    assert [i[2] for i in pairer.intents] == [30]
    pairer.add_frame(0.0, 'after reset')   # the sim was reset: time starts again
    assert pairer.stamps == [0.0] and not pairer.intents


def test_panel_is_three_panes_under_a_label_strip():
    panes = [np.full((112, 112, 3), v, np.uint8) for v in (10, 20, 30)]
    panel = compose_panel(panes, ['now', 'foresight', 'actual'])
    assert panel.shape == (112 + LABEL_HEIGHT, 336, 3)
    assert (panel[LABEL_HEIGHT:, 112:224] == 20).all()
    assert compose_panel(panes).shape == (112, 336, 3)
    with pytest.raises(ValueError, match='panes'):
        compose_panel([panes[0], np.zeros((64, 64, 3), np.uint8)])


# --- the node, as a real process -------------------------------------------------------------
def color_of(k):
    return np.array([k % 256, (k // 256) * 40 % 256, 200], np.uint8)


@pytest.mark.ros
def test_node_publishes_now_foresight_actual_panels(tmp_path):
    """Fed 20 Hz frames and intents, it publishes panels of the frames the intents name."""
    from sensor_msgs.msg import Image

    from dial_ros.codecs import fill_image, fill_latent, image_to_rgb, stamp_to_sec
    from dial_ros.msg import LatentTensor
    from dial_ros.nodes.foresight_view import QOS_PANEL
    from dial_ros.nodes.qos import QOS_LATENT, QOS_SENSOR
    from dial_ros.topics import TOPIC_FORESIGHT_IMAGE, TOPIC_IMAGE, TOPIC_INTENT
    from rosgraph import running_node
    from test_node_perception import domain_for
    from dial_ros.model.checkpoint import load_checkpoint
    decoder = fd.load_decoder(fd.decoder_path(bundled_checkpoint()))
    size = decoder.config.image_size
    # the "intent" is the true tokens of a sim frame: its pane must look like that frame
    scene = held_out_frames(count=1)
    with torch.inference_mode():
        vision = load_checkpoint(bundled_checkpoint(), part='vision').eval()
        tokens = vision.system2.encode_images(scene).float().numpy()[0]
    domain = domain_for('foresight_view')
    with running_node('foresight_view', domain, tmp_path / 'node.log',
                      panel_rate_hz=5.0) as (peer, _):
        panels = peer.collect(Image, TOPIC_FORESIGHT_IMAGE, QOS_PANEL, stamped=False)
        pub_image = peer.node.create_publisher(Image, TOPIC_IMAGE, QOS_SENSOR)
        pub_intent = peer.node.create_publisher(LatentTensor, TOPIC_INTENT, QOS_LATENT)
        k = [0]

        def send():   # one 20 Hz camera frame (stamp k * 0.05 s), an intent every 4th
            frame = np.broadcast_to(color_of(k[0]), (224, 224, 3)).copy()
            pub_image.publish(fill_image(Image(), frame, k[0] * 0.05))
            if k[0] % 4 == 0:
                pub_intent.publish(fill_latent(LatentTensor(), tokens, k[0] * 0.05,
                                               horizon=16, valid=True, model_id='test'))
            k[0] += 1
        deadline = time.monotonic() + 90
        while len(panels) < 2 and time.monotonic() < deadline:
            peer.run(0.5, rate_hz=20, each=send)
        log = (tmp_path / 'node.log').read_text()
        assert len(panels) >= 2, log[-3000:]
    msg = panels[-1]
    panel = image_to_rgb(msg)
    assert panel.shape == (size + LABEL_HEIGHT, 3 * size, 3)
    index = round(stamp_to_sec(msg.header.stamp) / 0.05)   # the intent's source frame
    now, later = panel[LABEL_HEIGHT:, :size], panel[LABEL_HEIGHT:, 2 * size:]
    assert (now == color_of(index)).all()
    assert (later == color_of(index + 16)).all()        # 16 steps of 20 Hz later
    foresight, truth = panel[LABEL_HEIGHT:, size:2 * size], fd.resize(scene[0], size)
    mean_image = (torch.sigmoid(decoder.image_logit).permute(1, 2, 0).numpy() * 255).round()
    assert fd.psnr(foresight, truth) > fd.psnr(mean_image, truth) + 3.0


@pytest.mark.parametrize('arguments, started', [
    ([], True),                                      # the sim demo shows it
    (['sim:=false'], False),                         # on a robot only when asked
    (['sim:=false', 'foresight_view:=true'], True),
    (['checkpoint:=untrained'], False),              # no decoder for an untrained model
    (['foresight_view:=false'], False),
])
def test_launch_starts_the_view_with_the_sim_or_when_asked(arguments, started):
    import json
    import subprocess

    from rosgraph import child_env, PYTHON, ROOT
    from test_launch_settings import PLAN
    out = subprocess.run([PYTHON, '-c', PLAN, *arguments], cwd=ROOT, env=child_env(0),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert ('foresight_view' in json.loads(out.stdout)) == started


def test_launch_gives_the_view_the_checkpoint_when_it_has_a_decoder(tmp_path):
    import json
    import subprocess

    from rosgraph import child_env, PYTHON, ROOT
    from test_launch_settings import PLAN

    def plan(checkpoint):
        out = subprocess.run([PYTHON, '-c', PLAN, f'checkpoint:={checkpoint}'], cwd=ROOT,
                             env=child_env(0), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)
    assert 'foresight_view' not in plan(tmp_path)     # no decoder there: not started
    (tmp_path / fd.WEIGHTS).write_bytes(b'')
    assert plan(tmp_path)['foresight_view'][1] == {'checkpoint': str(tmp_path)}


@pytest.mark.ros
def test_node_without_a_decoder_exits_with_the_file_and_the_command(tmp_path):
    from rosgraph import start_node, stop_node
    from test_node_perception import domain_for
    missing = tmp_path / 'none' / fd.WEIGHTS
    proc = start_node('foresight_view', domain_for('foresight_missing'), tmp_path / 'node.log',
                      decoder=str(missing))
    try:
        code = proc.wait(120)
    finally:
        stop_node(proc)
    log = (tmp_path / 'node.log').read_text()
    assert code == 1, log
    assert str(missing) in log and 'dial_ros.train.foresight_decoder' in log, log
