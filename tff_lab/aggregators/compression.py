"""Compressed uploads: what a client sends instead of its float32 update, and what it costs.

Konečný, McMahan, Yu, Richtárik, Suresh, Bacon, "Federated Learning: Strategies for Improving
Communication Efficiency", NIPS 2016 PMMLW (arXiv:1610.05492); the rotation is Suresh, Yu, Kumar,
McMahan, "Distributed Mean Estimation with Limited Communication", ICML 2017 (arXiv:1611.00429).

A `Codec` turns a client's flattened update x ∈ R^d into a message of fixed-shape tensors
(`encode`, run at the client) and back (`decode`, run at the server):

  * `QuantizeCodec(bits, rotation)`: unbiased stochastic uniform quantisation. With
    lo = min x, hi = max x, s = (hi − lo)/(2^b − 1) and t_j = (x_j − lo)/s, coordinate j is sent
    as the b-bit code ⌊t_j⌋ + [u_j < t_j − ⌊t_j⌋], u_j ~ U[0, 1), so E[lo + code·s] = x_j. The
    codes are bit-packed into ⌈d·b/8⌉ bytes, plus lo and hi as float32. With `rotation`, x is first zero-padded to a power of
    two and multiplied by H·D (orthonormal Walsh–Hadamard H, random ±1 diagonal D), and the server
    inverts the rotation; the client sends its 4-byte rotation seed.
  * `TopKCodec(fraction)`: the k = round(fraction·d) largest-magnitude coordinates, as k float32
    values and k int32 indices (biased; no error feedback).
  * `RandomMaskCodec(fraction)`: k = round(fraction·d) coordinates drawn uniformly without
    replacement from a client seed, scaled by d/k so the decoded update is unbiased; sent as k
    float32 values and the 4-byte seed. This is the sketched form (Konečný et al.'s
    "subsampling") applied to the finished update: the structured form, training only the masked
    coordinates, would need a client-work change.
  * `IdentityCodec()`: the float32 update itself (the uncompressed baseline).

Randomness is stateless and seeded per client by a hash of the client's own update, so the same
seed and flags give the same numbers (and a resumed run equals an uninterrupted one) without
giving clients identities.

`CompressedSumFactory(codec)` is a `tff.aggregators` sum factory: clients encode, the server
decodes every message inside `tff.federated_aggregate` and sums, as TFF's own `EncodedSumFactory`
does. Because decoding is per client, it cannot sit on top of a secure sum (TFF's
`EncodedSumFactory` has the same limit); use it as the `value_sum_factory` of a mean or the record
aggregation of DP. Byzantine-robust rules (robust.py) take a codec directly.

Each round reports `num_clients` and, from the TFF type of the message actually sent (static
shapes, so every client's message has exactly this size), `upload_bytes_per_client`,
`download_bytes_per_client` (the float32 model broadcast, 4·d bytes: tff_lab's models have only
trainable weights), `float32_upload_bytes_per_client` (4·d) and `compression_ratio` (4·d /
upload_bytes_per_client); the names the secure aggregation rounds use too.
"""

import collections
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def num_kept(fraction: float, d: int) -> int:
  """Coordinates kept by top-k or a random mask: round(fraction·d), at least 1."""
  return max(1, int(fraction * d + 0.5))


def client_seed(x: tf.Tensor) -> tf.Tensor:
  """A client's int32 seed: a hash of its own update (deterministic, differs between updates)."""
  return tf.cast(tf.strings.to_hash_bucket_fast(tf.io.serialize_tensor(x), 2**31 - 1), tf.int32)


def _stream(seed: tf.Tensor, salt: int) -> tf.Tensor:
  """A stateless-RNG seed for one use (`salt`) of a client seed."""
  return tf.stack([tf.cast(seed, tf.int64), tf.constant(salt, tf.int64)])


def hadamard(x: tf.Tensor) -> tf.Tensor:
  """Orthonormal fast Walsh–Hadamard transform of a vector of length 2^m; its own inverse."""
  n = x.shape[0]
  h = 1
  while h < n:
    pairs = tf.reshape(x, [-1, 2, h])
    x = tf.stack([pairs[:, 0] + pairs[:, 1], pairs[:, 0] - pairs[:, 1]], axis=1)
    h *= 2
  return tf.reshape(x, [n]) / math.sqrt(n)


def _pack(codes: tf.Tensor, bits: int) -> tf.Tensor:
  """Packs int32 codes in [0, 2^bits) into ⌈n·bits/8⌉ bytes (little-endian bit order)."""
  n = codes.shape[0]
  stream = tf.reshape(tf.bitwise.bitwise_and(
      tf.bitwise.right_shift(codes[:, tf.newaxis], tf.range(bits)), 1), [-1])
  stream = tf.pad(stream, [[0, (-n * bits) % 8]])
  octets = tf.reshape(stream, [-1, 8])
  return tf.cast(tf.reduce_sum(tf.bitwise.left_shift(octets, tf.range(8)), axis=1), tf.uint8)


def _unpack(packed: tf.Tensor, n: int, bits: int) -> tf.Tensor:
  """Inverse of `_pack`."""
  stream = tf.reshape(tf.bitwise.bitwise_and(
      tf.bitwise.right_shift(tf.cast(packed, tf.int32)[:, tf.newaxis], tf.range(8)), 1), [-1])
  planes = tf.reshape(stream[:n * bits], [n, bits])
  return tf.reduce_sum(tf.bitwise.left_shift(planes, tf.range(bits)), axis=1)


class Codec:
  """Encodes a float32 vector at a client into a message of fixed-shape tensors, and back."""

  def encode(self, x: tf.Tensor, seed: tf.Tensor) -> 'collections.OrderedDict[str, tf.Tensor]':
    """Encodes `x` (float32[d]) using the int32 scalar `seed` for any randomness."""
    raise NotImplementedError

  def decode(self, message, d: int) -> tf.Tensor:
    """Returns the float32[d] vector the server reconstructs from `message`."""
    raise NotImplementedError

  def round_trip(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`decode(encode(x, seed), d)`: what the server gets from a client holding `x`. A codec may
    skip lossless steps here (the in-graph aggregation, `tff_lab.aggregators.in_graph`, calls
    it for every client); the result must be the same."""
    return self.decode(self.encode(x, seed), x.shape[0])


class IdentityCodec(Codec):
  """Sends the float32 update unchanged (4·d bytes)."""

  def encode(self, x, seed):
    del seed
    return collections.OrderedDict(values=x)

  def decode(self, message, d):
    return message['values']


class QuantizeCodec(Codec):
  """Unbiased stochastic b-bit uniform quantisation, optionally after a random rotation."""

  def __init__(self, bits: int, rotation: bool = False):
    if not 1 <= bits <= 16:
      raise ValueError(f'bits must be in [1, 16], got {bits}')
    self.bits = bits
    self.rotation = rotation

  def _length(self, d: int) -> int:
    return 2 ** math.ceil(math.log2(d)) if self.rotation else d

  def _signs(self, seed, n):
    return tf.cast(2 * tf.random.stateless_uniform([n], _stream(seed, 1), maxval=2,
                                                   dtype=tf.int32) - 1, tf.float32)

  def _quantize(self, x, seed):
    """The codes (float32 integers in [0, 2^bits)), low and high of x (rotated first)."""
    n = self._length(x.shape[0])
    if self.rotation:
      x = hadamard(tf.pad(x, [[0, n - x.shape[0]]]) * self._signs(seed, n))
    low, high = tf.reduce_min(x), tf.reduce_max(x)
    levels = 2 ** self.bits - 1
    step = (high - low) / levels
    scaled = tf.clip_by_value(tf.math.divide_no_nan(x - low, step), 0, levels)
    lower = tf.floor(scaled)
    # Round up with probability scaled - lower (exact in float32, unlike floor(scaled + u)).
    codes = lower + tf.cast(tf.random.stateless_uniform([n], _stream(seed, 0)) < scaled - lower,
                            tf.float32)
    return codes, low, high

  def _dequantize(self, codes, low, high, seed, d):
    n = self._length(d)
    y = low + codes * ((high - low) / (2 ** self.bits - 1))
    if self.rotation:
      y = (hadamard(y) * self._signs(seed, n))[:d]
    return y

  def encode(self, x, seed):
    codes, low, high = self._quantize(x, seed)
    message = collections.OrderedDict(codes=_pack(tf.cast(codes, tf.int32), self.bits),
                                      low=low, high=high)
    if self.rotation:
      message['seed'] = seed
    return message

  def decode(self, message, d):
    codes = tf.cast(_unpack(message['codes'], self._length(d), self.bits), tf.float32)
    seed = message['seed'] if self.rotation else None
    return self._dequantize(codes, message['low'], message['high'], seed, d)

  def round_trip(self, x, seed):
    # The bit packing is lossless: skip it.
    return self._dequantize(*self._quantize(x, seed), seed, x.shape[0])


class TopKCodec(Codec):
  """The k largest-magnitude coordinates (ties: lower index first), as values and indices."""

  def __init__(self, fraction: float):
    if not 0 < fraction < 1:
      raise ValueError(f'topk_fraction must be in (0, 1), got {fraction}')
    self.fraction = fraction

  def encode(self, x, seed):
    del seed
    _, indices = tf.math.top_k(tf.abs(x), k=num_kept(self.fraction, x.shape[0]))
    return collections.OrderedDict(values=tf.gather(x, indices), indices=indices)

  def decode(self, message, d):
    return tf.scatter_nd(message['indices'][:, tf.newaxis], message['values'], [d])


class RandomMaskCodec(Codec):
  """k seeded uniformly random coordinates, scaled by d/k (unbiased), as values and the seed."""

  def __init__(self, fraction: float):
    if not 0 < fraction < 1:
      raise ValueError(f'mask_fraction must be in (0, 1), got {fraction}')
    self.fraction = fraction

  def _indices(self, seed, d):
    order = tf.argsort(tf.random.stateless_uniform([d], _stream(seed, 2)))
    return order[:num_kept(self.fraction, d)]

  def encode(self, x, seed):
    d = x.shape[0]
    indices = self._indices(seed, d)
    scale = d / num_kept(self.fraction, d)
    return collections.OrderedDict(values=tf.gather(x, indices) * scale, seed=seed)

  def decode(self, message, d):
    return tf.scatter_nd(self._indices(message['seed'], d)[:, tf.newaxis], message['values'], [d])


def create_codec(compression: str, bits: int = 8, rotation: bool = False,
                 topk_fraction: float = 0.01, mask_fraction: float = 0.1) -> Codec:
  """The codec for `--compression` (`none`, `quantize`, `topk`, `random_mask`)."""
  if compression == 'none':
    return IdentityCodec()
  if compression == 'quantize':
    return QuantizeCodec(bits, rotation)
  if compression == 'topk':
    return TopKCodec(topk_fraction)
  if compression == 'random_mask':
    return RandomMaskCodec(mask_fraction)
  raise ValueError(f'unknown compression {compression!r}')


def _leaves(type_spec) -> list:
  return [type_spec] if isinstance(type_spec, tff.TensorType) else tff.structure.flatten(type_spec)


def float32_vector_length(value_type) -> Optional[int]:
  """d for float32[d], which codecs and robust rules work on; None for other float32 structures.

  Factories flatten those with `tff.aggregators.concat_factory` first.

  Raises:
    TypeError: If `value_type` holds anything but fixed-shape float32 tensors.
  """
  if not all(isinstance(t, tff.TensorType) and t.dtype == np.float32
             and tff.types.is_shape_fully_defined(t.shape) for t in _leaves(value_type)):
    raise TypeError(f'expected fixed-shape float32 tensors, got {value_type}')
  if isinstance(value_type, tff.TensorType) and len(value_type.shape) == 1:
    return value_type.shape[0]
  return None


def type_bytes(type_spec) -> int:
  """Bytes of a value of TFF type `type_spec` (a tensor or a structure of fixed-shape tensors)."""
  return sum(tff.types.num_elements_in_shape(t.shape) * np.dtype(t.dtype).itemsize
             for t in _leaves(type_spec))


def build_client_encoder(codec: Codec, d: int) -> tff.Computation:
  """float32[d] -> message: the computation a client runs on its flattened update."""

  @tff.tensorflow.computation(tff.TensorType(np.float32, [d]))
  def encode(x):
    return codec.encode(x, client_seed(x))

  return encode


def _count_one(value_type) -> tff.Computation:

  @tff.tensorflow.computation(value_type)
  def one(value):
    del value
    return tf.constant(1, tf.int32)

  return one


def count_clients(value):
  """The number of clients holding `value` (CLIENTS-placed), as an int32 at the server."""
  return tff.federated_sum(tff.federated_map(_count_one(value.type_signature.member), value))


def communication(num_clients: tf.Tensor, client_upload_bytes: int, client_download_bytes: int,
                  dense_bytes: int) -> 'collections.OrderedDict[str, tf.Tensor]':
  """The round's communication measurements, in TensorFlow.

  Args:
    num_clients: Clients that reported this round (an int32 tensor).
    client_upload_bytes: Bytes each client uploaded.
    client_download_bytes: Bytes each client downloaded (the model broadcast and any more).
    dense_bytes: Bytes of the uncompressed float32 update, for `compression_ratio`.
  """
  return collections.OrderedDict(
      num_clients=num_clients,
      upload_bytes_per_client=tf.constant(client_upload_bytes, tf.int64),
      download_bytes_per_client=tf.constant(client_download_bytes, tf.int64),
      float32_upload_bytes_per_client=tf.constant(dense_bytes, tf.int64),
      compression_ratio=tf.constant(dense_bytes / client_upload_bytes, tf.float32))


def communication_measurements(num_clients, client_upload_bytes: int,
                               client_download_bytes: int, dense_bytes: int):
  """`communication` as a federated computation of `num_clients` (int32@SERVER)."""

  @tff.tensorflow.computation(tff.TensorType(np.int32))
  def measure(n):
    return communication(n, client_upload_bytes, client_download_bytes, dense_bytes)

  return tff.federated_map(measure, num_clients)


def dense_communication(value):
  """Communication measurements of an uncompressed float32 upload of `value` (CLIENTS-placed)."""
  dense = type_bytes(value.type_signature.member)
  return communication_measurements(count_clients(value), dense, dense, dense)


class CompressedSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Sum of client values, each uploaded through `codec` and decoded at the server.

  Structured values are flattened to one float32 vector (`tff.aggregators.concat_factory`).
  Measurements: `communication` (see the module docstring).
  """

  def __init__(self, codec: Codec):
    self._codec = codec

  def create(self, value_type) -> tff.templates.AggregationProcess:
    d = float32_vector_length(value_type)
    if d is None:
      return tff.aggregators.concat_factory(self).create(value_type)
    codec = self._codec
    encode = build_client_encoder(codec, d)
    message_type = encode.type_signature.result

    @tff.tensorflow.computation
    def zero():
      return tf.zeros([d], tf.float32)

    @tff.tensorflow.computation(value_type, message_type)
    def accumulate(total, message):
      return total + codec.decode(message, d)

    @tff.tensorflow.computation(value_type, value_type)
    def merge(a, b):
      return a + b

    @tff.tensorflow.computation(value_type)
    def report(total):
      return total

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      messages = tff.federated_map(encode, value)
      total = tff.federated_aggregate(messages, zero(), accumulate, merge, report)
      dense = type_bytes(value_type)
      measurements = communication_measurements(count_clients(value), type_bytes(message_type),
                                                dense, dense)
      return tff.templates.MeasuredProcessOutput(state, total, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
