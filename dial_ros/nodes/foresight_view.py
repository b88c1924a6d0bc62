"""Foresight you can look at: now | what System-2 expects | what actually came, side by side.

    python -m dial_ros.nodes.foresight_view --ros-args -p panel_rate_hz:=2.0

Subscribes: /camera/head/image_raw (sensor_msgs/Image, rgb8/bgr8, sensor-data QoS) and
/dial/latent_intent (dial_ros/LatentTensor: predicted ViT tokens of the frame ``horizon``
steps after its header.stamp). Publishes /dial/foresight/image (sensor_msgs/Image rgb8,
reliable, stamped with the intent's source frame) at most ``panel_rate_hz``: three panes of
the decoder's size (112 px) - the frame the intent came from, the intent decoded to pixels
by the checkpoint's foresight decoder, and the frame that arrived ``horizon /
step_rate_hz`` seconds later - under a label strip; and /diagnostics (1 Hz, with the PSNR
of the last foresight against the frame that came).

A panel is published only once its later frame has arrived, so it lags the live camera by
the foresight horizon (0.8 s). The decoder is ``<checkpoint>/foresight_decoder.safetensors``
(``decoder`` overrides the path); a missing one stops the node with an error naming the
file and the command that trains it. Decoding runs only for the panels published.
"""
import dataclasses
import sys

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from dial_ros.core.foresight_panel import compose_panel, ForesightPairer
from dial_ros.msg import LatentTensor
from dial_ros.nodes import common
from dial_ros.schema import setting
from dial_ros.topics import TOPIC_FORESIGHT_IMAGE

# reliable: rqt_image_view and the recorder subscribe reliably; best effort would not match
QOS_PANEL = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE,
                       history=HistoryPolicy.KEEP_LAST)


@dataclasses.dataclass
class Params:
    """Parameters of the foresight view node."""

    checkpoint: str = setting('', "checkpoint folder holding foresight_decoder.safetensors; "
                              "'' = the bundled one", read_only=True)
    decoder: str = setting('', "foresight decoder file; '' = the checkpoint's",
                           read_only=True)
    panel_rate_hz: float = setting(2.0, 'most panels per second (live)', low=0.1, high=20.0,
                                   unit='Hz')
    step_rate_hz: float = setting(20.0, 'rate of the steps the foresight horizon counts (the '
                                  "training data's frame rate): the later frame is horizon / "
                                  'this after the intent', low=1.0, high=1000.0, unit='Hz')
    match_tolerance_s: float = setting(0.03, 'a frame this close to the time wanted counts as '
                                       'that frame', low=0.0, high=1.0, unit='s')
    buffer_s: float = setting(3.0, 'camera history kept (must exceed the foresight horizon)',
                              low=0.5, high=30.0, unit='s', read_only=True)
    labels: bool = setting(True, 'label the three panes (live)')


def load_decoder(params):
    """The ForesightDecoder for ``params``; RuntimeError naming the file when missing."""
    import torch

    from dial_ros.model import foresight_decoder as fd
    from dial_ros.paths import bundled_checkpoint
    torch.set_num_threads(1)
    try:
        path = params.decoder or fd.decoder_path(params.checkpoint or bundled_checkpoint())
        return fd.load_decoder(path)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise RuntimeError(f'cannot load the foresight decoder: {err}') from err


class ForesightViewNode(Node):
    """Buffers frames and intents, publishes decoded panels; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__('foresight_view', **kwargs)
        self.params = common.declare_params(self, Params(), on_change=self._on_param)
        try:
            self.decoder = load_decoder(self.params)
        except RuntimeError as err:
            raise SystemExit(f'foresight_view: {err}') from None
        cfg = self.decoder.config
        self.shape = (cfg.num_tokens, cfg.token_dim)
        self.pairer = ForesightPairer(self.params.buffer_s, self.params.match_tolerance_s)
        self.throttle = common.Throttle(self.get_logger(), 2.0)
        self.counts = {'frames': 0, 'intents': 0, 'panels': 0, 'bad_frames': 0,
                       'bad_intents': 0}
        self.last_psnr = None
        self.pub = self.create_publisher(Image, TOPIC_FORESIGHT_IMAGE, QOS_PANEL)
        self.create_subscription(Image, common.TOPIC_IMAGE, self._on_image, common.QOS_SENSOR)
        self.create_subscription(LatentTensor, common.TOPIC_INTENT, self._on_intent,
                                 common.QOS_LATENT)
        self.timer = self.create_timer(1.0 / self.params.panel_rate_hz, self._tick)
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f'foresight view: {cfg.image_size} px panes at most '
                               f'{self.params.panel_rate_hz} Hz on {TOPIC_FORESIGHT_IMAGE}')

    def _on_param(self, name, value):
        if name == 'panel_rate_hz':
            self.timer.timer_period_ns = int(1e9 / value)
        elif name == 'match_tolerance_s':
            self.pairer.tolerance_s = value

    def _on_image(self, msg):
        try:
            rgb = common.image_to_rgb(msg)
        except ValueError as err:
            self.counts['bad_frames'] += 1
            self.throttle('error', 'image', f'frame ignored: {err}')
            return
        self.counts['frames'] += 1
        self.pairer.add_frame(common.stamp_to_sec(msg.header.stamp), rgb)

    def _on_intent(self, msg):
        if not msg.valid:
            return   # a revoked intent: nothing to show
        try:
            tokens = common.read_latent(msg, self.shape).copy()  # the message buffer is reused
        except ValueError as err:
            self.counts['bad_intents'] += 1
            self.throttle('error', 'intent', f'intent ignored: {err}')
            return
        self.counts['intents'] += 1
        self.pairer.add_intent(common.stamp_to_sec(msg.header.stamp),
                               msg.horizon / self.params.step_rate_hz, tokens)

    def _tick(self):
        from dial_ros.model.foresight_decoder import psnr, resize
        ready = self.pairer.pop_ready()
        if ready is None:
            return
        stamp, horizon_s, intent, now, later = ready
        size = self.decoder.config.image_size
        foresight = self.decoder.decode(intent)
        now, later = resize(now, size), resize(later, size)
        self.last_psnr = psnr(foresight, later)
        labels = None
        if self.params.labels:
            labels = ['now', f'foresight +{horizon_s:.2g} s', f'actual +{horizon_s:.2g} s']
        panel = compose_panel([now, foresight, later], labels)
        self.pub.publish(common.rgb_to_image(panel, stamp))
        self.counts['panels'] += 1

    def _publish_diagnostics(self):
        values = dict(self.counts, psnr_last_db=self.last_psnr if self.last_psnr is not None
                      else 'none', panel_rate_hz=self.params.panel_rate_hz)
        level = 'ok' if self.counts['panels'] else 'warn'
        self.diagnostics.publish(level, f"{self.counts['panels']} panels", values)


def main(args=None):
    return common.run_node(ForesightViewNode, args)


if __name__ == '__main__':
    sys.exit(main())
