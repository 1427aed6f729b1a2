"""The SecAgg protocol: exact sums with and without dropouts, uniform masked vectors, loud failure
below the threshold, Shamir sharing, the fixed-point encoding's overflow bound, and exact bytes."""

import random

import numpy as np
import pytest
from scipy import stats

from tff_lab.privacy import secagg


def _inputs(num_clients, length, modulus_bits, seed=0):
  rng = np.random.default_rng(seed)
  return {u: rng.integers(0, 2**modulus_bits, length, dtype=np.uint64)
          for u in range(num_clients)}


def _plain_sum(inputs, clients, modulus_bits):
  return sum(inputs[u].astype(object) for u in clients) % 2**modulus_bits


@pytest.mark.parametrize('modulus_bits', [32, 13])
def test_sum_is_exact_without_dropouts(modulus_bits):
  inputs = _inputs(6, 257, modulus_bits)
  result = secagg.run_protocol(inputs, modulus_bits, seed=1)
  assert result.included == tuple(range(6))
  np.testing.assert_array_equal(result.sum, _plain_sum(inputs, range(6), modulus_bits))


@pytest.mark.parametrize('modulus_bits', [32, 13])
def test_sum_is_exact_with_dropouts_at_every_stage(modulus_bits):
  inputs = _inputs(9, 100, modulus_bits)
  result = secagg.run_protocol(inputs, modulus_bits, threshold=5, drop_after_keys=[8],
                               drop_after_sharing=[1, 4], drop_after_masking=[2], seed=2)
  survivors = [0, 2, 3, 5, 6, 7]  # 2 sent its masked input, then dropped: it is in the sum.
  assert result.included == tuple(survivors)
  np.testing.assert_array_equal(result.sum, _plain_sum(inputs, survivors, modulus_bits))


def test_sum_is_exact_with_exactly_threshold_responders():
  inputs = _inputs(5, 50, 32)
  result = secagg.run_protocol(inputs, threshold=3, drop_after_sharing=[0],
                               drop_after_masking=[1], seed=3)
  np.testing.assert_array_equal(result.sum, _plain_sum(inputs, [1, 2, 3, 4], 32))


def _chi2_top_byte_p(vector, modulus_bits):
  top = (vector >> np.uint64(modulus_bits - 8)).astype(np.int64)
  return stats.chisquare(np.bincount(top, minlength=256)).pvalue


def test_masked_vectors_look_uniform_and_plain_ones_do_not():
  encoder = secagg.FixedPointEncoder(clip_range=1.0, num_clients=5)
  rng = np.random.default_rng(4)
  inputs = {u: encoder.encode(rng.normal(0, 0.1, 4096)) for u in range(5)}
  result = secagg.run_protocol(inputs, drop_after_sharing=[3], seed=5)
  assert sorted(result.masked_inputs) == [0, 1, 2, 4]  # the server's whole view
  for u, masked in result.masked_inputs.items():
    assert _chi2_top_byte_p(masked, 32) > 1e-3, u
    assert stats.kstest(masked / 2.0**32, 'uniform').pvalue > 1e-3, u
  for u, plain in inputs.items():  # the same tests reject the unmasked encoded updates
    assert _chi2_top_byte_p(plain, 32) < 1e-12, u
    assert stats.kstest(plain / 2.0**32, 'uniform').pvalue < 1e-12, u


@pytest.mark.parametrize('drops', [
    dict(drop_after_keys=[0, 1, 2]),
    dict(drop_after_sharing=[0, 1, 2]),
    dict(drop_after_masking=[0, 1, 2]),
])
def test_fewer_than_threshold_survivors_raises(drops):
  with pytest.raises(secagg.InsufficientSharesError):
    secagg.run_protocol(_inputs(5, 10, 32), threshold=3, seed=6, **drops)


def test_field_prime_is_prime_and_holds_32_byte_secrets():
  p = secagg.FIELD_PRIME
  assert p > 2**256 and p.bit_length() <= 8 * secagg.FIELD_BYTES
  rng = random.Random(0)
  for _ in range(20):  # Miller-Rabin
    a = rng.randrange(2, p - 1)
    d, s = p - 1, 0
    while d % 2 == 0:
      d, s = d // 2, s + 1
    x = pow(a, d, p)
    if x in (1, p - 1):
      continue
    for _ in range(s - 1):
      x = pow(x, 2, p)
      if x == p - 1:
        break
    else:
      pytest.fail(f'{a} witnesses that FIELD_PRIME is composite')


def test_shamir_any_threshold_subset_reconstructs_and_fewer_raise():
  secret = 2**256 - 12345
  shares = secagg.shamir_split(secret, range(1, 8), 4, secagg.make_randbytes(7))
  for xs in ([1, 2, 3, 4], [7, 5, 3, 1], [2, 4, 6, 7]):
    assert secagg.shamir_reconstruct({x: shares[x] for x in xs}, 4) == secret
  assert secagg.shamir_reconstruct(shares, 4) == secret
  with pytest.raises(secagg.InsufficientSharesError):
    secagg.shamir_reconstruct({x: shares[x] for x in (1, 2, 3)}, 4)
  shares[6] = (shares[6] + 1) % secagg.FIELD_PRIME
  with pytest.raises(secagg.InconsistentSharesError):
    secagg.shamir_reconstruct(shares, 4)


def test_encoder_round_trip_and_overflow_bound():
  n, r = 7, 0.5
  encoder = secagg.FixedPointEncoder(clip_range=r, num_clients=n, modulus_bits=20)
  rng = np.random.default_rng(8)
  xs = rng.uniform(-0.7, 0.7, (n, 64))
  residues = sum(encoder.encode(x).astype(np.int64) for x in xs) % encoder.modulus
  clipped_sum = np.clip(xs, -r, r).sum(axis=0)
  np.testing.assert_allclose(encoder.decode_sum(residues, n), clipped_sum,
                             atol=n * r / (2 * encoder.max_level))
  for extreme in (r, -r):  # n clients at the range limit still decode exactly
    residues = n * encoder.encode(np.full(3, extreme)).astype(np.int64) % encoder.modulus
    np.testing.assert_allclose(encoder.decode_sum(residues, n), n * extreme)
  assert n * encoder.max_level < 2**19
  with pytest.raises(ValueError, match='overflow'):
    encoder.decode_sum(residues, n + 1)


def test_counted_bytes_equal_closed_form():
  length, bits = 300, 13
  result = secagg.run_protocol(_inputs(7, length, bits), bits, threshold=4, drop_after_keys=[6],
                               drop_after_sharing=[5], drop_after_masking=[4], seed=9)
  upload, download = secagg.expected_bytes(7, 6, 5, 4, length, bits)
  assert result.cost.total_upload_bytes == upload
  assert result.cost.total_download_bytes == download
  masked_message = secagg.ID_BYTES + -(-length * bits // 8)
  assert max(result.cost.upload_bytes.values()) > masked_message  # keys and shares cost extra


@pytest.mark.parametrize('kwargs,match', [
    (dict(threshold=1), 'threshold'),
    (dict(threshold=6), 'threshold'),
    (dict(drop_after_sharing=[9]), 'drop'),
])
def test_bad_arguments_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    secagg.run_protocol(_inputs(5, 10, 32), **kwargs)


@pytest.mark.parametrize('modulus_bits', [32, 13])
def test_active_security_sums_exactly_with_dropouts_and_costs_the_closed_form(modulus_bits):
  inputs = _inputs(9, 100, modulus_bits)
  result = secagg.run_protocol(inputs, modulus_bits, threshold=5, drop_after_keys=[8],
                               drop_after_sharing=[1, 4], drop_after_masking=[2], seed=2,
                               active=True)
  survivors = [0, 2, 3, 5, 6, 7]
  assert result.included == tuple(survivors)
  np.testing.assert_array_equal(result.sum, _plain_sum(inputs, survivors, modulus_bits))
  upload, download = secagg.expected_bytes(9, 8, 6, 5, 100, modulus_bits, active=True)
  assert (result.cost.total_upload_bytes, result.cost.total_download_bytes) == (upload, download)
  plain_up, plain_down = secagg.expected_bytes(9, 8, 6, 5, 100, modulus_bits)
  assert upload - plain_up == secagg.SIGNATURE_BYTES * 9 + (secagg.ID_BYTES + 64) * 5


@pytest.mark.parametrize('n, threshold', [(5, 1), (5, 2), (4, 2), (6, 3), (5, 6)])
def test_thresholds_that_are_not_a_strict_majority_are_refused(n, threshold):
  with pytest.raises(ValueError, match=r'strict majority .*2t > n') as error:
    secagg.run_protocol(_inputs(n, 10, 32), threshold=threshold)
  assert '\n' not in str(error.value)


def test_clients_and_shamir_refuse_threshold_one():
  with pytest.raises(ValueError, match='t=1 every Shamir share is the secret'):
    secagg.SecAggClient(0, 32, 1, secagg.make_randbytes(0))
  with pytest.raises(ValueError, match='threshold 1 makes every share the secret'):
    secagg.shamir_split(5, [1, 2, 3], 1)
  with pytest.raises(ValueError, match='distinct'):
    secagg.shamir_split(5, [1, 1, 2], 2)


def test_each_stage_is_answered_once_and_in_order():
  client = secagg.SecAggClient(0, 32, 2, secagg.make_randbytes(0))
  with pytest.raises(secagg.StageOrderViolation, match='share_keys requested before '
                     'advertise_keys') as error:
    client.share_keys(b'')
  assert str(error.value).startswith('client 0 refuses:') and '\n' not in str(error.value)
  client.advertise_keys()
  with pytest.raises(secagg.StageOrderViolation, match='advertise_keys requested again'):
    client.advertise_keys()
  with pytest.raises(secagg.StageOrderViolation, match='unmask requested before share_keys'):
    client.unmask(b'')
  server = secagg.SecAggServer(4, 32, 2)
  with pytest.raises(secagg.StageOrderViolation, match='unmask requested before collect_keys'):
    server.unmask([])
  assert issubclass(secagg.ProtocolViolation, secagg.SecAggError)
  assert issubclass(secagg.InsufficientSharesError, secagg.SecAggError)
