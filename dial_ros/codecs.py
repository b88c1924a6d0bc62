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
LATENT_DTYPES = tuple(_ITEMSIZE)


def to_bfloat16_bits(x):
    """float32 array -> its bfloat16 bit patterns (uint16), round to nearest even.

    bfloat16 is the top half of a float32; adding 0x7FFF plus the lowest kept bit before the
    cut rounds ties to even. NaN stays NaN (read_latent refuses it anyway).
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16
    return np.where(np.isnan(x), np.uint32(0x7FC0), rounded).astype(np.uint16)


def _encode(tensor, dtype):
    """float32 array -> contiguous array whose bytes are ``dtype``'s wire form."""
    tensor = np.asarray(tensor)
    if dtype == 'float32':
        return np.ascontiguousarray(tensor, dtype=np.float32)
    if dtype == 'float16':
        with np.errstate(over='ignore'):  # overflow becomes the clear error below
            wire = np.ascontiguousarray(tensor, dtype=np.float16)
        if not np.isfinite(wire).all() and np.isfinite(tensor).all():
            peak = float(np.abs(tensor).max())
            raise ValueError(f'latent: |x| up to {peak:.6g} overflows float16 (max 65504); '
                             'send it as bfloat16 or float32')
        return wire
    if dtype == 'bfloat16':
        return to_bfloat16_bits(np.asarray(tensor, dtype=np.float32))
    raise ValueError(f'latent: dtype {dtype!r} is not one of {list(LATENT_DTYPES)}')


def fill_latent(msg, tensor, stamp_s, dtype='float32', **fields):
    """Fill a dial_ros/LatentTensor from an array, sent as ``dtype`` (one memcpy into data).

    float16/bfloat16 halve the message; read_latent converts them back to float32. A message
    published again is refilled in place when its data has the size already.
    """
    wire = _encode(tensor, dtype)
    sec_to_stamp(stamp_s, msg.header.stamp)
    msg.shape = list(wire.shape)
    msg.dtype = dtype
    data = getattr(msg, 'data', None)
    if isinstance(data, array.array) and data.typecode == 'B' and len(data) == wire.nbytes:
        memoryview(data)[:] = memoryview(wire).cast('B')  # a reused message: no allocation
    else:
        buf = array.array('B')
        buf.frombytes(memoryview(wire).cast('B'))  # one memcpy (array('B', view) is per item)
        msg.data = buf
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def read_latent(msg, expected_shape=None):
    """LatentTensor -> float32 array; ValueError naming what is wrong.

    float32 is a zero-copy view of the message's buffer; float16 and bfloat16 are converted
    (one new float32 array).
    """
    if not msg.valid:
        raise ValueError('latent: marked invalid by its producer')
    if msg.dtype not in _ITEMSIZE:
        raise ValueError(f'latent: unsupported dtype {msg.dtype!r} '
                         f'(one of {list(LATENT_DTYPES)})')
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
