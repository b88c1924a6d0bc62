"""Latent dtypes on the wire: float32 bit-exact, float16 / bfloat16 halve the message.

fill_latent encodes (bfloat16 with numpy, round to nearest even), the message goes through
real CDR serialisation, read_latent converts back to float32; bad messages are refused with
a ValueError naming what is wrong.
"""
import numpy as np
import pytest
import torch
from rclpy.serialization import deserialize_message, serialize_message

from dial_ros.codecs import fill_latent, LATENT_DTYPES, read_latent, to_bfloat16_bits
from dial_ros.msg import LatentTensor

SHAPE = (64, 2048)
# Largest relative rounding error of each dtype (half an ulp: 2^-(mantissa bits + 1)).
REL_ERROR = {'float32': 0.0, 'float16': 2.0 ** -11, 'bfloat16': 2.0 ** -8}


def _tokens(seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(SHAPE)).astype(np.float32)


def _wire(x, dtype):
    msg = fill_latent(LatentTensor(), x, 12.5, dtype, model_id='m', valid=True, seq=3)
    return deserialize_message(serialize_message(msg), LatentTensor)


@pytest.mark.parametrize('dtype', LATENT_DTYPES)
def test_round_trip_error_is_within_half_an_ulp_of_the_dtype(dtype):
    x = _tokens()
    back = _wire(x, dtype)
    assert back.dtype == dtype and tuple(back.shape) == SHAPE
    assert len(back.data) == x.size * {'float32': 4}.get(dtype, 2)  # half the bytes
    y = read_latent(back, SHAPE)
    assert y.dtype == np.float32 and y.shape == SHAPE
    # float16 is relative only for normal numbers (|x| >= 2^-14): add its subnormal step.
    floor = 2.0 ** -25 if dtype == 'float16' else 0.0
    assert np.all(np.abs(y - x) <= REL_ERROR[dtype] * np.abs(x) + floor), dtype
    if dtype != 'float32':
        assert np.abs(y - x).max() > 0  # really rounded (the test would notice a no-op)
    assert (back.model_id, back.seq, back.valid) == ('m', 3, True)


def test_float32_is_bit_exact_including_special_values():
    x = _tokens(1)
    x.view(np.uint32)[0, :4] = [0x80000000, 0x00000001, 0x7F7FFFFF, 0x00800000]
    y = read_latent(_wire(x, 'float32'), SHAPE)
    assert np.array_equal(y.view(np.uint32), x.view(np.uint32))


def test_bfloat16_matches_torch_rounding_to_nearest_even():
    x = _tokens(2, scale=100.0)
    # exact ties between two bfloat16 values: the even one must win (0x3F80 and 0x3F82)
    x.view(np.uint32)[0, :4] = [0x3F808000, 0x3F818000, 0xBF808000, 0x3F80FFFF]
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bfloat16_bits(x), want)
    assert list(to_bfloat16_bits(x)[0, :4]) == [0x3F80, 0x3F82, 0xBF80, 0x3F81]
    y = read_latent(_wire(x, 'bfloat16'), SHAPE)
    assert np.array_equal(y, torch.from_numpy(want.view(np.int16)).view(torch.bfloat16)
                          .float().numpy())


def test_float16_overflow_is_refused_at_the_sender():
    x = _tokens()
    x[3, 5] = 70000.0
    with pytest.raises(ValueError, match='overflows float16'):
        fill_latent(LatentTensor(), x, 1.0, 'float16')
    fill_latent(LatentTensor(), x, 1.0, 'bfloat16')  # bfloat16 has float32's range


def test_bad_dtype_and_sizes_are_named():
    with pytest.raises(ValueError, match="dtype 'int8' is not one of"):
        fill_latent(LatentTensor(), _tokens(), 1.0, 'int8')
    msg = _wire(_tokens(), 'float16')
    msg.dtype = 'float64'
    with pytest.raises(ValueError, match="unsupported dtype 'float64'"):
        read_latent(msg)
    msg = _wire(_tokens(), 'bfloat16')
    msg.dtype = 'float32'  # the bytes of a half-precision tensor labelled float32
    with pytest.raises(ValueError, match=r'262144 data bytes .* \(float32\) needs 524288'):
        read_latent(msg, SHAPE)


def test_real_intents_fit_float16():
    """The bundled model's tokens and intents are normalised: far inside float16's range."""
    from dial_ros.nodes import common
    policy, _ = common.load_policy('', 'gr1_sim', 0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        rgb = rng.integers(0, 256, (policy.image_size, policy.image_size, 3), dtype=np.uint8)
        tokens = policy.encode_frame(rgb)
        intent = policy.foresee(tokens, 'pick up the cube')
        for x in (tokens, intent):
            assert np.abs(x).max() < 100.0  # 65504 is float16's largest value
            msg = fill_latent(LatentTensor(), x, 1.0, 'float16', valid=True)
            y = read_latent(msg, x.shape)
            assert np.abs(y - x).max() <= 2.0 ** -11 * np.abs(x).max()


def test_a_reused_message_is_refilled_in_place_and_resized_when_needed():
    msg = LatentTensor()
    fill_latent(msg, _tokens(0), 1.0, valid=True)
    buffer = msg.data
    fill_latent(msg, _tokens(1), 2.0, valid=True)
    assert msg.data is buffer  # no new allocation for a message published again
    assert np.array_equal(read_latent(msg, SHAPE), _tokens(1))
    fill_latent(msg, _tokens(2), 3.0, 'bfloat16', valid=True)  # other size: a new buffer
    assert len(msg.data) == _tokens().size * 2 and buffer is not msg.data
    assert np.array_equal(np.frombuffer(msg.data, np.uint16).reshape(SHAPE),
                          to_bfloat16_bits(_tokens(2)))


def test_malloc_keeps_large_buffers_on_glibc():
    from dial_ros import alloc
    assert alloc.keep_large_buffers()  # this machine runs glibc: mallopt accepted both
