"""Property tests for tff_lab.data.partition."""

import numpy as np
import pytest

from tff_lab.data import partition

NUM_CLASSES = 10


def _balanced_labels(per_class: int = 100) -> np.ndarray:
  """10 classes x `per_class` examples, in random order."""
  labels = np.repeat(np.arange(NUM_CLASSES), per_class)
  return np.random.default_rng(1234).permutation(labels)


def _skewed_labels(n: int = 2000) -> np.ndarray:
  """Unequal class sizes, to exercise the general case."""
  probs = np.arange(1, NUM_CLASSES + 1) / np.arange(1, NUM_CLASSES + 1).sum()
  return np.random.default_rng(99).choice(NUM_CLASSES, size=n, p=probs)


SCHEMES = {
    'iid': lambda labels, seed: partition.partition_iid(len(labels), 17, seed),
    'dirichlet': lambda labels, seed: partition.partition_dirichlet(
        labels, 17, alpha=0.5, seed=seed),
    'shards': lambda labels, seed: partition.partition_shards(
        labels, 17, shards_per_client=3, seed=seed),
    'quantity_lognormal': lambda labels, seed: partition.partition_quantity_skew(
        len(labels), 17, seed, distribution='lognormal', sigma=1.5),
    'quantity_powerlaw': lambda labels, seed: partition.partition_quantity_skew(
        len(labels), 17, seed, distribution='powerlaw', exponent=1.0),
}


@pytest.mark.parametrize('scheme', sorted(SCHEMES))
@pytest.mark.parametrize('labels', [_balanced_labels(), _skewed_labels()],
                         ids=['balanced', 'skewed'])
def test_every_example_assigned_exactly_once(scheme, labels):
  parts = SCHEMES[scheme](labels, 0)
  assert len(parts) == 17
  for p in parts:
    assert p.dtype == np.int64
    assert np.all(np.diff(p) > 0), 'indices must be sorted and unique'
  everything = np.sort(np.concatenate(parts))
  np.testing.assert_array_equal(everything, np.arange(len(labels)))


@pytest.mark.parametrize('scheme', sorted(SCHEMES))
def test_deterministic_given_seed(scheme):
  labels = _skewed_labels()
  first, again, other = (SCHEMES[scheme](labels, s) for s in (3, 3, 4))
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize('num_examples,num_clients', [(100, 7), (10, 10),
                                                      (1001, 50), (5, 1)])
def test_iid_sizes_differ_by_at_most_one(num_examples, num_clients):
  sizes = [len(p) for p in partition.partition_iid(num_examples, num_clients, 0)]
  assert sum(sizes) == num_examples
  assert max(sizes) - min(sizes) <= 1


def test_shards_give_at_most_shards_per_client_labels():
  labels = _balanced_labels(per_class=100)  # 1000 examples, 100 shards of 10.
  for seed in range(3):
    parts = partition.partition_shards(labels, 50, shards_per_client=2, seed=seed)
    for p in parts:
      assert len(p) == 20
      assert len(np.unique(labels[p])) <= 2
    # Same property seen through the histograms.
    hist = partition.label_histograms(labels, parts, NUM_CLASSES)
    assert (hist > 0).sum(axis=1).max() <= 2


def test_shard_sizes_as_equal_as_possible():
  labels = _skewed_labels(n=1003)
  parts = partition.partition_shards(labels, 10, shards_per_client=1, seed=0)
  sizes = [len(p) for p in parts]
  assert max(sizes) - min(sizes) <= 1


def test_dirichlet_min_size_honoured():
  labels = _skewed_labels()
  for seed in range(3):
    parts = partition.partition_dirichlet(labels, 20, alpha=0.1, seed=seed,
                                          min_size=25)
    assert min(len(p) for p in parts) >= 25


def test_dirichlet_unreachable_min_size_raises():
  labels = _balanced_labels(per_class=10)  # 100 examples.
  with pytest.raises(ValueError, match='min_size'):
    # Needs an exact 10/10/.../10 split: hopeless with alpha=0.01.
    partition.partition_dirichlet(labels, 10, alpha=0.01, seed=0, min_size=10,
                                  max_attempts=5)


def _mean_total_variation(labels, parts):
  """Mean over clients of TV(client label distribution, global one)."""
  hist = partition.label_histograms(labels, parts, NUM_CLASSES).astype(float)
  local = hist / hist.sum(axis=1, keepdims=True)
  global_ = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
  return np.mean(0.5 * np.abs(local - global_).sum(axis=1))


def test_dirichlet_skew_grows_as_alpha_shrinks():
  labels = _balanced_labels(per_class=300)
  tv = {}
  for alpha in (0.1, 1.0, 100.0):
    tv[alpha] = np.mean([
        _mean_total_variation(
            labels,
            partition.partition_dirichlet(labels, 20, alpha=alpha, seed=seed))
        for seed in range(4)
    ])
  assert tv[0.1] > tv[1.0] > tv[100.0]


def test_label_histograms_counts():
  labels = _skewed_labels()
  parts = partition.partition_dirichlet(labels, 8, alpha=0.3, seed=0)
  hist = partition.label_histograms(labels, parts, NUM_CLASSES)
  assert hist.shape == (8, NUM_CLASSES)
  np.testing.assert_array_equal(hist.sum(axis=1), [len(p) for p in parts])
  np.testing.assert_array_equal(hist.sum(axis=0),
                                np.bincount(labels, minlength=NUM_CLASSES))
  for k, p in enumerate(parts):
    for c in range(NUM_CLASSES):
      assert hist[k, c] == sum(1 for i in p if labels[i] == c)


def _size_cv(sizes) -> float:
  """Coefficient of variation of client sizes: the usual quantity-skew measure."""
  sizes = np.asarray(sizes, float)
  return sizes.std() / sizes.mean()


def test_min_size_guarantees():
  labels = _balanced_labels(per_class=100)  # 1000 examples.
  assert min(map(len, partition.partition_iid(1000, 40, 0, min_size=25))) >= 25
  # 100 shards of 10, 2 per client: every client holds exactly 20.
  assert min(map(len, partition.partition_shards(labels, 50, 2, 0, min_size=20))) >= 20
  for distribution in partition.QUANTITY_DISTRIBUTIONS:
    for seed in range(5):
      parts = partition.partition_quantity_skew(1000, 30, seed, distribution, sigma=3.0,
                                                exponent=0.5, min_size=12)
      assert min(map(len, parts)) >= 12
      assert sum(map(len, parts)) == 1000


@pytest.mark.parametrize('distribution', partition.QUANTITY_DISTRIBUTIONS)
def test_quantity_sizes_follow_the_drawn_weights(distribution):
  # With min_size=0 every size is the rounded share N * w_k / sum(w), w re-drawn here.
  sizes = partition.quantity_skew_sizes(100_000, 25, 7, distribution, sigma=1.0, exponent=2.0,
                                        min_size=0)
  rng = np.random.default_rng(7)
  w = rng.lognormal(0.0, 1.0, 25) if distribution == 'lognormal' else 1 + rng.pareto(2.0, 25)
  np.testing.assert_array_less(np.abs(sizes - 100_000 * w / w.sum()), 1.0)
  assert sizes.sum() == 100_000


def test_quantity_labels_stay_iid():
  labels = _balanced_labels(per_class=500)
  parts = partition.partition_quantity_skew(len(labels), 10, 0, sigma=1.0, min_size=200)
  tv = _mean_total_variation(labels, parts)
  assert tv < _mean_total_variation(labels, partition.partition_dirichlet(labels, 10, 1.0, 0))
  assert tv < 0.1


def test_quantity_skew_grows_with_sigma_and_with_heavier_tails():
  def mean_cv(**kwargs):
    return np.mean([_size_cv(partition.quantity_skew_sizes(10_000, 50, seed, **kwargs))
                    for seed in range(10)])

  lognormal = [mean_cv(distribution='lognormal', sigma=s) for s in (0.0, 0.25, 1.0, 2.0)]
  assert lognormal[0] < 0.01  # sigma = 0: equal sizes (up to rounding).
  assert all(a < b for a, b in zip(lognormal, lognormal[1:]))
  powerlaw = [mean_cv(distribution='powerlaw', exponent=e) for e in (4.0, 1.5, 0.75)]
  assert all(a < b for a, b in zip(powerlaw, powerlaw[1:]))


def test_natural_one_client_per_id():
  rng = np.random.default_rng(0)
  ids = rng.choice(np.array(['hospital_b', 'hospital_a', 'hospital_c', 'hospital_d']), 500,
                   p=[0.5, 0.3, 0.199, 0.001])
  keys, parts = partition.partition_natural(ids)
  assert list(keys) == sorted(set(ids))
  for key, p in zip(keys, parts):
    assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    np.testing.assert_array_equal(p, np.flatnonzero(ids == key))
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(ids)))
  # Groups below min_size are left out; the rest are unchanged.
  small = min(keys, key=lambda k: (ids == k).sum())
  kept_keys, kept = partition.partition_natural(ids, min_size=(ids == small).sum() + 1)
  assert small not in kept_keys and len(kept_keys) == len(keys) - 1
  for key, p in zip(kept_keys, kept):
    np.testing.assert_array_equal(p, np.flatnonzero(ids == key))


LABELS = _balanced_labels(per_class=10)  # 100 examples.


@pytest.mark.parametrize('call,match', [
    (lambda: partition.partition_iid(10, 0, 0), 'num_clients'),
    (lambda: partition.partition_iid(3, 4, 0), 'cannot split 3 examples over 4'),
    (lambda: partition.partition_dirichlet(LABELS, 5, 0.0, 0), 'alpha'),
    (lambda: partition.partition_dirichlet(LABELS, 5, -1.0, 0), 'alpha'),
    (lambda: partition.partition_dirichlet(LABELS, 0, 1.0, 0), 'num_clients'),
    (lambda: partition.partition_dirichlet(LABELS, 11, 1.0, 0, min_size=10),
     'min_size'),
    (lambda: partition.partition_dirichlet(LABELS.reshape(10, 10), 5, 1.0, 0),
     'labels'),
    (lambda: partition.partition_dirichlet(LABELS, 5, 1.0, 0, max_attempts=0),
     'max_attempts'),
    (lambda: partition.partition_shards(LABELS, 5, 0, 0), 'shards_per_client'),
    (lambda: partition.partition_shards(LABELS, 0, 2, 0), 'num_clients'),
    (lambda: partition.partition_shards(LABELS, 51, 2, 0), 'shards_per_client'),
    (lambda: partition.partition_shards(LABELS.reshape(10, 10), 5, 2, 0),
     'labels'),
    (lambda: partition.label_histograms(LABELS, [np.arange(100)], 5),
     'num_classes'),
    (lambda: partition.partition_iid(100, 10, 0, min_size=11), 'min_size=11'),
    (lambda: partition.partition_iid(100, 10, 0, min_size=-1), 'min_size'),
    (lambda: partition.partition_shards(LABELS, 10, 2, 0, min_size=11), 'min_size=11'),
    (lambda: partition.partition_quantity_skew(5, 6, 0), 'num_examples=5'),
    (lambda: partition.partition_quantity_skew(100, 10, 0, min_size=11), 'min_size=11'),
    (lambda: partition.partition_quantity_skew(100, 0, 0), 'num_clients'),
    (lambda: partition.partition_quantity_skew(100, 5, 0, sigma=-0.5), 'sigma'),
    (lambda: partition.partition_quantity_skew(100, 5, 0, 'powerlaw', exponent=0.0),
     'exponent'),
    (lambda: partition.partition_quantity_skew(100, 5, 0, 'zipf'), 'distribution'),
    (lambda: partition.partition_natural(np.zeros((2, 3))), 'ids'),
    (lambda: partition.partition_natural(np.array([], dtype=int)), 'ids'),
    (lambda: partition.partition_natural(np.array([1, 1, 2]), min_size=3), 'min_size=3'),
])
def test_invalid_arguments_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_partition_labels_dispatches_to_each_partitioner():
  labels = np.repeat(np.arange(10), 20)
  for kind, direct in (
      ('iid', partition.partition_iid(len(labels), 8, 3, min_size=2)),
      ('dirichlet', partition.partition_dirichlet(labels, 8, 0.5, 3, min_size=2)),
      ('shards', partition.partition_shards(labels, 8, 2, 3, min_size=2))):
    got = partition.partition_labels(kind, labels, 8, 3, alpha=0.5, shards_per_client=2,
                                     min_size=2)
    assert all(np.array_equal(a, b) for a, b in zip(got, direct)), kind
  with pytest.raises(ValueError, match="unknown partition 'zipf'"):
    partition.partition_labels('zipf', labels, 8, 3)
