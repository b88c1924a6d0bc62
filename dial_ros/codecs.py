"""Message <-> array conversions shared by the nodes, the bag reader and the tools; no rclpy.

The functions read and fill message objects by their fields only, so they work the same on
rclpy messages and on the ones ``rosbags`` deserialises from a bag; they never construct a
message (the caller passes one in). ValueError names what is wrong with a message.
"""
import array
import hashlib
import io

import numpy as np

_ITEMSIZE = {'float32': 4, 'float16': 2, 'bfloat16': 2}
CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
# What the live pipeline accepts from a camera; recordings may hold the other encodings.
LIVE_ENCODINGS = ('rgb8', 'bgr8')


# --- time --------------------------------------------------------------------------------
def stamp_to_sec(stamp):
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds, stamp):
    """Fill a builtin_interfaces/Time ``stamp`` from float seconds; returns it."""
    sec = int(np.floor(seconds))
    stamp.sec = sec
    stamp.nanosec = min(int(round((seconds - sec) * 1e9)), 999_999_999)
    return stamp


def now_sec(node):
    """The node's clock (sim time when the node uses it) in float seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


def instruction_id(text):
    """Short stable hash of an instruction, carried in latent messages."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# --- latent tensors ----------------------------------------------------------------------
def fill_latent(msg, tensor, stamp_s, **fields):
    """Fill a dial_ros/LatentTensor from a float32 array (one memcpy)."""
    tensor = np.ascontiguousarray(tensor, dtype=np.float32)
    sec_to_stamp(stamp_s, msg.header.stamp)
    msg.shape = list(tensor.shape)
    msg.dtype = 'float32'
    buf = array.array('B')
    buf.frombytes(memoryview(tensor).cast('B'))  # one memcpy (array('B', view) is per element)
    msg.data = buf
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def read_latent(msg, expected_shape=None):
    """LatentTensor -> float32 array (zero-copy); ValueError naming what is wrong."""
    if not msg.valid:
        raise ValueError('latent: marked invalid by its producer')
    if msg.dtype not in _ITEMSIZE:
        raise ValueError(f'latent: unsupported dtype {msg.dtype!r}')
    shape = tuple(int(s) for s in msg.shape)
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ValueError(f'latent: shape {shape} does not match the expected '
                         f'{tuple(expected_shape)}')
    need = int(np.prod(shape)) * _ITEMSIZE[msg.dtype]
    if len(msg.data) != need:
        raise ValueError(f'latent: {len(msg.data)} data bytes for shape {shape} '
                         f'({msg.dtype}) needs {need}')
    if msg.dtype == 'bfloat16':
        raw = np.frombuffer(msg.data, np.uint16).astype(np.uint32) << 16
        tensor = raw.view(np.float32).reshape(shape)
    else:
        tensor = np.frombuffer(msg.data, msg.dtype).reshape(shape)
        tensor = tensor.astype(np.float32, copy=False)
    if not np.all(np.isfinite(tensor)):
        raise ValueError('latent: contains NaN or Inf')
    return tensor


# --- images ------------------------------------------------------------------------------
def image_to_rgb(msg, expected_size=None, encodings=LIVE_ENCODINGS):
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB; ValueError for encodings/sizes we refuse.

    ``encodings``: those accepted (any of ``CHANNELS``); alpha is dropped, mono repeated.
    """
    enc = msg.encoding.lower()
    if enc not in encodings or enc not in CHANNELS:
        raise ValueError(f'image: encoding {msg.encoding!r} is not supported '
                         f'({" or ".join(encodings)})')
    channels = CHANNELS[enc]
    if msg.step < msg.width * channels or len(msg.data) < msg.step * msg.height:
        raise ValueError(f'image: {len(msg.data)} bytes, step {msg.step} do not fit '
                         f'{msg.width}x{msg.height} {enc}')
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * msg.height)
    img = rows.reshape(msg.height, msg.step)[:, :msg.width * channels]
    img = img.reshape(msg.height, msg.width, channels)
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    if enc.startswith('bgr'):
        img = img[..., ::-1]
    if expected_size is not None and (msg.height, msg.width) != tuple(expected_size):
        raise ValueError(f'image: size {msg.width}x{msg.height} does not match the expected '
                         f'{expected_size[1]}x{expected_size[0]}')
    return np.ascontiguousarray(img)


def compressed_to_rgb(msg):
    """sensor_msgs/CompressedImage (any format Pillow reads) -> (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError
    try:
        return np.asarray(Image.open(io.BytesIO(bytes(msg.data))).convert('RGB'))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f'compressed image ({msg.format!r}): {err}') from None


def fill_image(msg, rgb, stamp_s, frame_id=''):
    """Fill a sensor_msgs/Image with an (H, W, 3) uint8 RGB array (rgb8); returns it."""
    sec_to_stamp(stamp_s, msg.header.stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = array.array('B', np.ascontiguousarray(rgb, np.uint8).tobytes())
    return msg
