"""Issue #16 at library level: for each path that releases something, what was released against
the ε reported. A kill and a resume (re-run rounds count twice; a torn journal line was never
released), the labels of every ε, secret sampling, Poisson sampling, and the metrics withheld."""

import collections
import math

import dp_accounting
import numpy as np
import pytest

from tff_lab.privacy import accounting
from tff_lab.privacy import ledger as ledger_lib
from tff_lab.privacy import release
from tff_lab.privacy import secret as secret_lib
from tff_lab.simulation import sampling

Z, M, N = 1.0, 5, 50
DELTA = N**-1.1


def _direct_epsilons(counts, sampling_scheme='fixed'):
  """ε after each of the increasing release `counts`: dp-accounting on events written here from
  the module docstring, composed increment by increment."""
  if sampling_scheme == 'fixed':
    acc = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        N, M, dp_accounting.GaussianDpEvent(Z / 2))
  else:
    acc = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(M / N, dp_accounting.GaussianDpEvent(Z))
  out, done = [], 0
  for count in counts:
    acc.compose(event, count - done)
    done = count
    out.append(acc.get_epsilon(DELTA))
  return out


def _run_rounds(ledger, rounds, released):
  """The loop's order: noisy aggregate, journal, then release (here: appended to `released`)."""
  eps = {}
  for r in rounds:
    ledger.record(r)
    released.append(r)
    eps[r] = ledger.epsilon()
  return eps


def test_kill_and_resume_counts_every_release(tmp_path):
  path = str(tmp_path / ledger_lib.LEDGER_FILENAME)
  mechanism = accounting.Mechanism(Z, M, N, 'fixed')
  released = []
  _run_rounds(ledger_lib.PrivacyLedger(path, mechanism, DELTA), range(1, 5), released)
  # Killed after round 4's release, before its checkpoint: the last checkpoint is round 2, and
  # the kill also tore the journal line of round 5, whose results never left the process.
  with open(path, 'a') as f:
    f.write('{"round": 5, "attempt": 1, "noise_mul')
  resumed = ledger_lib.PrivacyLedger(path, mechanism, DELTA)
  eps = _run_rounds(resumed, range(3, 7), released)

  assert released == [1, 2, 3, 4, 3, 4, 5, 6]
  assert resumed.num_releases == len(released) == 8
  assert resumed.repeated_rounds() == {3: 2, 4: 2}
  after_5, after_6, after_8 = _direct_epsilons([5, 6, 8])
  assert eps[6] == pytest.approx(after_8, rel=1e-9)
  # What a round counter would report for 6 rounds is too small: 2 releases go uncounted.
  assert eps[6] > after_6 * 1.05
  # The ε reported with each re-run round is that of every release up to and including it.
  assert eps[3] == pytest.approx(after_5, rel=1e-9)
  assert eps[3] < eps[4] < eps[5] < eps[6]


def test_every_epsilon_is_labelled(tmp_path):
  ledger = ledger_lib.PrivacyLedger(str(tmp_path / 'l.jsonl'),
                                    accounting.Mechanism(Z, M, N, 'poisson'), DELTA)
  ledger.record(1)
  for conv in (ledger.summary()['accounting'], ledger.releases[0]['accounting']):
    assert conv['adjacency'] == 'add/remove-one'
    assert conv['sampling'] == 'poisson' and conv['accountant'] == 'rdp'
    assert conv['delta'] == DELTA
    for part in ('add/remove-one adjacency', 'Poisson sampling', 'RDP', f'delta={DELTA:.3g}'):
      assert part in conv['description']
  assert ledger.epsilon() == pytest.approx(_direct_epsilons([1], 'poisson')[0], rel=1e-9)


def test_secret_sampling_is_not_the_public_seeds_and_resumes_exactly(tmp_path):
  seed, rounds = 0, 30
  ckpt = str(tmp_path / 'checkpoints')
  entropy = secret_lib.sampling_entropy(secret_lib.load_or_create_run_secret(ckpt))
  before_kill = [sampling.fixed_size_sample(N, M, entropy, r) for r in range(1, rounds + 1)]
  # A resumed process reads the secret back and samples the same clients.
  entropy_again = secret_lib.sampling_entropy(secret_lib.load_or_create_run_secret(ckpt))
  assert [sampling.fixed_size_sample(N, M, entropy_again, r)
          for r in range(1, rounds + 1)] == before_kill
  # Someone with config.json (the seed) but not the secret predicts the sample no better than
  # chance: M/N of each guessed set is right on average, not all of it.
  guessed = [sampling.fixed_size_sample(N, M, seed, r) for r in range(1, rounds + 1)]
  hits = sum(len(set(g) & set(s)) for g, s in zip(guessed, before_kill))
  expected, std = rounds * M * M / N, math.sqrt(rounds * M * (M / N) * (1 - M / N))
  assert abs(hits - expected) < 5 * std
  assert hits < rounds * M / 2


def test_poisson_sampling_under_the_secret_includes_each_client_at_rate_q(tmp_path):
  q, rounds = M / N, 600
  entropy = secret_lib.sampling_entropy(secret_lib.load_or_create_run_secret(str(tmp_path)))
  counts = np.zeros(N)
  for r in range(1, rounds + 1):
    counts[sampling.poisson_sample(N, q, entropy, r)] += 1
  # Binomial(N·rounds, q) in total; 5 standard deviations (false failure < 1e-6).
  std = math.sqrt(N * rounds * q * (1 - q))
  assert abs(counts.sum() - N * rounds * q) < 5 * std
  assert np.all(np.abs(counts - rounds * q) < 5 * math.sqrt(rounds * q * (1 - q)) + 1)


@pytest.mark.parametrize('sampling_scheme', ['fixed', 'poisson'])
def test_metrics_from_client_data_are_withheld_by_default(sampling_scheme):
  examples = [31, 40, 12, 55, 20]  # the sampled clients' example counts
  metrics = collections.OrderedDict(
      train_loss=0.5, train_accuracy=0.8, train_examples=sum(examples),
      fed_eval_loss=0.6, central_eval_loss=0.7, dp_epsilon=1.0, dp_delta=DELTA)
  metrics['aggregator/num_clients'] = len(examples)
  out = release.release_metrics(metrics, sampling=sampling_scheme)
  assert sum(examples) not in [out.metrics.get(k) for k in out.metrics if k != 'dp_epsilon']
  assert {'train_loss', 'train_accuracy', 'train_examples', 'fed_eval_loss'} <= set(out.withheld)
  assert {'central_eval_loss', 'dp_epsilon', 'dp_delta'} <= set(out.metrics)
  # Under Poisson sampling the sample size itself is private.
  assert ('aggregator/num_clients' in out.withheld) == (sampling_scheme == 'poisson')
