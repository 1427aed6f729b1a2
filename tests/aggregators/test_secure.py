"""The TFF secure-sum factory returns, bit for bit, what the real masking protocol unmasks, with
and without dropouts; it reports the protocol's exact bytes; it refuses overflow and bad input."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab.aggregators import dp
from tff_lab.aggregators import secure
from tff_lab.privacy import secagg

N, RANGE = 5, 1.0
SHAPES = ([6], [2, 3])


@pytest.fixture(scope='module')
def process():
  value_type = tff.types.to_type([tff.TensorType(np.float32, s) for s in SHAPES])
  return secure.create_secure_factory(N, RANGE).create(value_type)


def _client_values(num_clients, seed):
  rng = np.random.default_rng(seed)
  return [[rng.normal(0, 0.6, s).astype(np.float32) for s in SHAPES] for _ in range(num_clients)]


def _protocol_sum(values, **drops):
  """Encode with NumPy, run the masking protocol, decode the survivors' sum, as float32 leaves."""
  encoder = secagg.FixedPointEncoder(RANGE, N)
  inputs = {u: encoder.encode(np.concatenate([leaf.ravel() for leaf in v]))
            for u, v in enumerate(values)}
  result = secagg.run_protocol(inputs, seed=0, **drops)
  flat = encoder.decode_sum(result.sum, len(result.included)).astype(np.float32)
  return [flat[:6], flat[6:].reshape(2, 3)], result


@pytest.mark.parametrize('dropped', [[], [1, 3]])
def test_tff_sum_equals_unmasked_protocol_sum_bit_for_bit(process, dropped):
  values = _client_values(N, seed=len(dropped))
  expected, protocol = _protocol_sum(values, drop_after_sharing=dropped)
  # In TFF a dropped client is one that never reports: the process sums the others.
  survivors = [v for u, v in enumerate(values) if u not in dropped]
  output = process.next(process.initialize(), survivors)
  for got, want in zip(output.result, expected):
    np.testing.assert_array_equal(got, want)
  flat = [np.concatenate([leaf.ravel() for leaf in v]) for v in survivors]
  np.testing.assert_allclose(np.concatenate([r.ravel() for r in output.result]),
                             np.clip(flat, -RANGE, RANGE).sum(axis=0), atol=1e-6)
  m = output.measurements
  assert m['num_clients'] == len(survivors)
  assert m['clipped_coordinates'] == sum(int(np.sum(np.abs(f) > RANGE)) for f in flat)
  if not dropped:  # the reported bytes are the protocol's counted wire bytes
    assert m['upload_bytes_per_client'] == protocol.cost.total_upload_bytes / N
    assert m['download_bytes_per_client'] == protocol.cost.total_download_bytes / N
  assert m['float32_upload_bytes_per_client'] == 4 * 12


def test_more_clients_than_configured_fail_loudly(process):
  with pytest.raises(Exception, match='overflow'):
    process.next(process.initialize(), _client_values(N + 1, seed=3))


def test_as_dp_record_sum():
  n, clip = 4, 0.5
  factory = dp.create_dp_factory('fixed', 1e-6, n, clip_norm=clip,
                                 record_aggregation_factory=secure.create_secure_factory(n, clip))
  process = factory.create(tff.TensorType(np.float32, [3]))
  values = [np.array([0.1, -0.2, 0.05], np.float32) * s for s in (1, 2, 5, 10)]
  output = process.next(process.initialize(), values)
  clipped = [v * min(1.0, clip / np.linalg.norm(v)) for v in values]
  np.testing.assert_allclose(output.result, np.mean(clipped, axis=0), atol=1e-5)
  assert output.measurements['dp']['num_clients'] == n


def test_rejects_integer_values_and_bad_arguments():
  with pytest.raises(TypeError):
    secure.create_secure_factory(4).create(tff.TensorType(np.int32, [3]))
  for args, match in [((4, 0.0), 'clip_range'), ((0,), 'num_clients'),
                      ((4, 1.0, 33), 'modulus_bits'), ((4, 1.0, 2), 'more bits')]:
    with pytest.raises(ValueError, match=match):
      secure.create_secure_factory(*args)
