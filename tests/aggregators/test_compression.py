"""Codecs: unbiasedness (statistically), exact message sizes, top-k and random-mask selection;
and the compressed sum as a federated computation."""

import math

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.aggregators import compression

DRAWS = 2000


def _draws(codec, x, draws=DRAWS):
  """decode(encode(x)) for client seeds 0..draws-1, as a [draws, d] array."""
  x = tf.constant(x, tf.float32)

  @tf.function
  def run():
    return tf.map_fn(lambda s: codec.decode(codec.encode(x, s), x.shape[0]),
                     tf.range(draws), fn_output_signature=tf.float32)

  return run().numpy().astype(np.float64)


def _message_bytes(codec, d):
  return compression.type_bytes(compression.build_client_encoder(codec, d).type_signature.result)


def _assert_unbiased(samples, x):
  mean, stderr = samples.mean(axis=0), samples.std(axis=0) / math.sqrt(len(samples))
  assert np.count_nonzero(stderr) > len(x) // 2, 'too little randomness to detect a bias'
  np.testing.assert_array_less(np.abs(mean - x), 4 * stderr + 1e-6)


def test_hadamard_is_the_orthonormal_walsh_hadamard_matrix():
  h = np.stack([compression.hadamard(tf.constant(e, tf.float32)).numpy() for e in np.eye(16)],
               axis=1)
  np.testing.assert_allclose(h, scipy.linalg.hadamard(16) / 4, atol=1e-6)
  x = np.random.RandomState(0).normal(size=16).astype(np.float32)
  np.testing.assert_allclose(compression.hadamard(compression.hadamard(x)), x, atol=1e-5)


@pytest.mark.parametrize('bits,rotation', [(1, False), (3, False), (2, True)])
def test_quantization_is_unbiased(bits, rotation):
  x = np.array([-1.5, 0.3, 0.31, 2.0, 0.0, -0.7, 1.1, 0.05, 0.9, -0.2])
  _assert_unbiased(_draws(compression.QuantizeCodec(bits, rotation), x), x)


def test_quantization_error_is_within_one_step():
  x = np.random.RandomState(1).normal(size=50)
  step = (x.max() - x.min()) / (2 ** 3 - 1)
  error = np.abs(_draws(compression.QuantizeCodec(3), x, draws=20) - x)
  assert error.max() <= step * (1 + 1e-5)


@pytest.mark.parametrize('bits', [1, 3, 16])
def test_codes_survive_bit_packing_exactly(bits):
  # Integer values 0..2^b-1 (both ends present) lie on the grid: step 1, no rounding.
  top = 2 ** bits - 1
  x = np.concatenate([[0, top], np.random.RandomState(bits).randint(0, top + 1, size=37)])
  decoded = _draws(compression.QuantizeCodec(bits), x, draws=3)
  np.testing.assert_array_equal(decoded, np.tile(x, (3, 1)))


@pytest.mark.parametrize('d,bits,rotation', [(10, 3, False), (10, 3, True), (5, 16, False),
                                             (5, 1, False), (1000, 8, False), (1000, 2, True)])
def test_quantized_message_size(d, bits, rotation):
  n = 2 ** math.ceil(math.log2(d)) if rotation else d
  # Packed b-bit codes, then low and high (float32), then the rotation seed (int32).
  expected = math.ceil(n * bits / 8) + 8 + (4 if rotation else 0)
  assert _message_bytes(compression.QuantizeCodec(bits, rotation), d) == expected


def test_rotation_lowers_the_error_of_a_spiky_vector():
  x = 0.01 * np.random.RandomState(7).normal(size=64)
  x[5] = 1.0
  plain = np.mean((_draws(compression.QuantizeCodec(1), x, 200) - x) ** 2)
  rotated = np.mean((_draws(compression.QuantizeCodec(1, rotation=True), x, 200) - x) ** 2)
  assert rotated < 0.5 * plain, (rotated, plain)


def test_topk_keeps_the_k_largest_magnitudes():
  x = np.random.RandomState(2).normal(size=200)
  codec = compression.TopKCodec(0.05)
  decoded = _draws(codec, x, draws=1)[0]
  top = np.argsort(-np.abs(x))[:10]
  np.testing.assert_allclose(decoded[top], x[top], rtol=1e-6)
  assert np.count_nonzero(decoded) == 10
  assert _message_bytes(codec, 200) == 10 * (4 + 4)  # float32 values and int32 indices
  ties = _draws(compression.TopKCodec(0.5), np.array([1., -1., 1., 0.5]), draws=1)[0]
  np.testing.assert_array_equal(ties, [1., -1., 0., 0.])  # equal magnitudes: lower index first


def test_random_mask_keeps_its_fraction_and_is_unbiased():
  d, fraction = 40, 0.25
  x = np.random.RandomState(3).normal(size=d)
  codec = compression.RandomMaskCodec(fraction)
  samples = _draws(codec, x)
  kept = samples != 0
  assert np.all(kept.sum(axis=1) == 10)
  np.testing.assert_allclose(samples[kept], np.broadcast_to(x / fraction, samples.shape)[kept],
                             rtol=1e-5)
  keep_rate = kept.mean(axis=0)
  np.testing.assert_array_less(np.abs(keep_rate - fraction),
                               4 * math.sqrt(fraction * (1 - fraction) / DRAWS))
  _assert_unbiased(samples, x)
  assert _message_bytes(codec, d) == 10 * 4 + 4  # float32 values and the int32 seed


def test_num_kept():
  assert compression.num_kept(0.1, 100) == 10
  assert compression.num_kept(0.01, 10) == 1
  assert compression.num_kept(0.25, 10) == 3


def test_client_seed_is_a_deterministic_function_of_the_update():
  a, b = tf.constant([1., 2.]), tf.constant([1., 2.000001])
  assert compression.client_seed(a) == compression.client_seed(tf.identity(a))
  assert compression.client_seed(a) != compression.client_seed(b)


def _clients(seed):
  rng = np.random.RandomState(seed)
  return [[rng.normal(size=3).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)]
          for _ in range(4)]


def test_compressed_sum_of_structured_values():
  value_type = tff.to_type([tff.TensorType(np.float32, [3]), tff.TensorType(np.float32, [2, 2])])
  clients = _clients(4)
  process = compression.CompressedSumFactory(compression.TopKCodec(0.3)).create(value_type)
  out = process.next(process.initialize(), clients)
  expected = np.zeros(7)
  for c in clients:
    flat = np.concatenate([c[0], c[1].ravel()])
    top = np.argsort(-np.abs(flat))[:2]  # round(0.3 * 7) = 2
    expected[top] += flat[top]
  np.testing.assert_allclose(np.concatenate([out.result[0], out.result[1].ravel()]), expected,
                             rtol=1e-6)
  assert dict(out.measurements) == pytest.approx(dict(
      num_clients=4, upload_bytes_per_client=16, download_bytes_per_client=28,
      float32_upload_bytes_per_client=28, compression_ratio=28 / 16))


def test_sixteen_bit_compressed_sum_is_close_to_the_sum():
  clients = _clients(5)
  value_type = tff.to_type([tff.TensorType(np.float32, [3]), tff.TensorType(np.float32, [2, 2])])
  process = compression.CompressedSumFactory(compression.QuantizeCodec(16)).create(value_type)
  out = process.next(process.initialize(), clients)
  flat = np.array([np.concatenate([c[0], c[1].ravel()]) for c in clients])
  bound = np.sum(flat.max(axis=1) - flat.min(axis=1)) / (2 ** 16 - 1)
  np.testing.assert_allclose(np.concatenate([out.result[0], out.result[1].ravel()]),
                             flat.sum(axis=0), atol=bound)
  assert out.measurements['upload_bytes_per_client'] == 7 * 2 + 8
