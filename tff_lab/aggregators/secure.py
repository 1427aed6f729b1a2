"""Secure aggregation as a `tff.aggregators` factory: the field arithmetic of SecAgg inside TFF.

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", ACM CCS 2017 (IACR ePrint 2017/281).

`SecAggSumFactory` sums client values the way the protocol does: each client clips its value to
[−r, r] per coordinate and encodes it into Z_{2^k} with `tff_lab.privacy.secagg.FixedPointEncoder`
(client-placed TensorFlow, bit for bit the NumPy encoder); the encoded vectors are summed mod 2^k;
the server decodes the sum. The server-placed part only ever receives the sum.

Design: where the masking happens. The masking itself runs in `tff_lab.privacy.secagg`, a real
implementation of the protocol (X25519 key agreement, Shamir-shared keys, AES-CTR masks, dropout
recovery), not inside the TFF computation, because TFF 0.87 cannot express it:

* TFF's C++ runtime (the `worker_binary`) executes TensorFlow graphs without Python, so
  `tf.py_function` / `tf.numpy_function` fail there ("No OpKernel was registered to support Op
  'PyFunc'"), and TensorFlow has no X25519, HKDF or AES ops to do the key agreement in-graph.
* An aggregation process receives only the clients' values: there is no client identity and no
  client-private input through which each client could receive its own keys. Keys delivered in
  the (server-placed) aggregator state would be known to the server, which defeats the masking.
* `tff.backends.mapreduce.federated_secure_modular_sum`, TFF's own stand-in for SecAgg, is not
  executable by the native runtime either ("Cannot embed a federated value"), so the modular sum
  is a `federated_sum` of the int64 residues reduced mod 2^k at the server: the same number.

Masking changes no output bit: for any dropout pattern the protocol returns exactly
Σ_{clients that sent input} encode(x) mod 2^k, the number this factory computes. tests/aggregators/
test_secure.py runs both on the same client values and checks they agree bit for bit;
tests/privacy/test_secagg.py checks the protocol itself (exact sums with dropouts, uniform masked
vectors, loud failure below the threshold). The protocol's bytes, which do not depend on the
values, are reported every round from `secagg.expected_bytes` (equal to the counted wire bytes,
tested); its compute time comes from `secagg.benchmark_protocol`, which runs it.

Range: values beyond ±r are clipped (counted in `clipped_coordinates`). Sums of at most
`clients_per_round` clients decode exactly; more clients than that make the round fail.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.privacy import secagg

# Covers unweighted and DP updates and most example-weighted ones; see create_secure_factory.
DEFAULT_CLIP_RANGE = 100.0


def _encode(x: tf.Tensor, encoder: secagg.FixedPointEncoder) -> tf.Tensor:
  """`secagg.FixedPointEncoder.encode` in TensorFlow: int64 residues in [0, 2^k)."""
  clipped = tf.clip_by_value(tf.cast(x, tf.float64), -encoder.clip_range, encoder.clip_range)
  levels = tf.cast(tf.math.round(clipped * encoder.scale), tf.int64)  # ties to even, as np.rint
  return tf.math.floormod(levels, encoder.modulus)


def _decode(residues: tf.Tensor, encoder: secagg.FixedPointEncoder, dtype: tf.DType) -> tf.Tensor:
  """`secagg.FixedPointEncoder.decode_sum` in TensorFlow."""
  residues = tf.math.floormod(residues, encoder.modulus)
  centred = tf.where(residues >= encoder.modulus // 2, residues - encoder.modulus, residues)
  return tf.cast(tf.cast(centred, tf.float64) / encoder.scale, dtype)


class SecAggSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Sums float values as SecAgg does: fixed-point in Z_{2^k}, modular sum, decode.

  Measurements (server-placed, per round): `num_clients`; `clipped_coordinates`, the coordinates
  that hit ±clip_range, summed over clients; and the protocol's `upload_bytes_per_client` and
  `download_bytes_per_client` next to `float32_upload_bytes_per_client`, the plain upload.
  """

  def __init__(self, clients_per_round: int, clip_range: float = DEFAULT_CLIP_RANGE,
               modulus_bits: int = 32):
    """See `create_secure_factory`."""
    self._encoder = secagg.FixedPointEncoder(clip_range, clients_per_round, modulus_bits)

  def create(self, value_type) -> tff.templates.AggregationProcess:
    if not tff.types.is_structure_of_floats(value_type):
      raise TypeError(f'SecAggSumFactory sums floating-point values; got {value_type}')
    encoder = self._encoder
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    dtypes = tf.nest.map_structure(lambda spec: spec.dtype, specs)
    length = sum(int(np.prod(spec.shape)) for spec in tf.nest.flatten(specs))

    @tff.tensorflow.computation(value_type)
    def encode(value):
      clipped = tf.add_n([tf.reduce_sum(tf.cast(tf.abs(x) > encoder.clip_range, tf.int64))
                          for x in tf.nest.flatten(value)])
      encoded = tf.nest.map_structure(lambda x: _encode(x, encoder), value)
      return encoded, clipped, tf.constant(1, tf.int64)

    encoded_type = encode.type_signature.result[0]

    @tff.tensorflow.computation(encoded_type, np.int64, np.int64)
    def decode(summed, num_clients, clipped):
      check = tf.debugging.assert_less_equal(
          num_clients, tf.constant(encoder.num_clients, tf.int64),
          message='more clients than clients_per_round: the SecAgg field sum could overflow')
      with tf.control_dependencies([check]):
        result = tf.nest.map_structure(lambda s, dtype: _decode(s, encoder, dtype), summed,
                                       dtypes)
      n = tf.maximum(num_clients, 1)  # a round without clients costs nothing
      upload, download = secagg.expected_bytes(n, n, n, n, length, encoder.modulus_bits)
      return result, collections.OrderedDict(
          num_clients=num_clients, clipped_coordinates=clipped,
          upload_bytes_per_client=upload // n, download_bytes_per_client=download // n,
          float32_upload_bytes_per_client=tf.constant(4 * length, tf.int64))

    @tff.federated_computation
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      encoded, clipped, ones = tff.federated_map(encode, value)
      decoded = tff.federated_map(decode, (tff.federated_sum(encoded), tff.federated_sum(ones),
                                           tff.federated_sum(clipped)))
      return tff.templates.MeasuredProcessOutput(state, decoded[0], decoded[1])

    return tff.templates.AggregationProcess(init_fn, next_fn)


def create_secure_factory(clients_per_round: int, clip_range: float = DEFAULT_CLIP_RANGE,
                          modulus_bits: int = 32) -> SecAggSumFactory:
  """The secure *sum* for `--secure_aggregation`: the innermost factory of the stack.

  Use it as the sum inside a mean (`tff.aggregators.MeanFactory(value_sum_factory=...)`) or as
  DP's `record_aggregation_factory`. `clip_range` must bound every coordinate it sums, or the
  coordinate is clipped (and counted in `clipped_coordinates`): under DP the records are clipped
  to L2 norm C, so coordinates lie within ±C (adaptive clipping also sums an unclipped-count
  indicator in ±0.5); under a weighted mean the values are example count × update.

  The mean of n decoded clients is off by at most r·n / 2^k per coordinate from the mean of
  their clipped values: 2.3e-7 for the default r = 100, n = 10, k = 32.

  Args:
    clients_per_round: n, the most clients one sum may have (fixes the fixed-point scale so that
      n encoded values cannot overflow; more clients make the round fail).
    clip_range: r > 0; each coordinate is clipped to [−r, r] before encoding.
    modulus_bits: k ∈ [1, 32], the field Z_{2^k}.

  Raises:
    ValueError: For a non-positive `clip_range`, `clients_per_round` < 1, `modulus_bits`
      outside [1, 32] or too few bits for n clients.
  """
  return SecAggSumFactory(clients_per_round, clip_range, modulus_bits)
