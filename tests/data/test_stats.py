"""The heterogeneity report: counts against direct counts, TV distance against NumPy, plots."""

import collections
import json
import types

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import tasks
from tff_lab.data import stats


def _digits(partition):
  return tasks.create_task('digits', {'partition': partition, 'alpha': 0.1, 'num_clients': 20,
                                      'model': 'mlp'})


@pytest.fixture(scope='module')
def reports(tmp_path_factory):
  out = {}
  for partition in ('iid', 'dirichlet'):
    task = _digits(partition)
    out[partition] = (task, stats.compute_stats(task, str(tmp_path_factory.mktemp(partition))))
  return out


def test_dirichlet_is_more_skewed_than_iid(reports):
  iid = reports['iid'][1]['skew']['mean_tv_distance']
  dirichlet = reports['dirichlet'][1]['skew']['mean_tv_distance']
  assert 0 <= iid < 0.25 < 0.5 < dirichlet <= 1
  assert reports['dirichlet'][1]['client_size']['std'] > 10 * reports['iid'][1]['client_size'][
      'std']


@pytest.mark.parametrize('partition', ['iid', 'dirichlet'])
def test_counts_and_distances_match_a_direct_computation(reports, partition):
  task, report = reports[partition]
  ids = task.train_data.client_ids
  labels = {c: np.array([int(e['y']) for e in task.train_data.create_tf_dataset_for_client(c)])
            for c in ids}
  assert report['num_clients'] == report['num_clients_analyzed'] == len(ids) == 20
  assert report['num_examples'] == sum(len(task.train_data.create_tf_dataset_for_client(c))
                                       for c in ids)
  sizes = np.array([len(labels[c]) for c in ids])
  assert report['client_size'] == {'min': sizes.min(), 'median': np.median(sizes),
                                   'mean': pytest.approx(sizes.mean()), 'max': sizes.max(),
                                   'std': pytest.approx(sizes.std())}
  assert report['labels'] == list(range(10))
  counts = np.array([np.bincount(labels[c], minlength=10) for c in ids])
  pooled = counts.sum(axis=0) / counts.sum()
  for c, row in zip(ids, counts):
    assert report['clients'][c]['size'] == len(labels[c])
    assert report['clients'][c]['label_counts'] == row.tolist()
    assert report['clients'][c]['tv_distance'] == pytest.approx(
        0.5 * np.abs(row / row.sum() - pooled).sum())
  assert report['global_label_counts'] == counts.sum(axis=0).tolist()


def test_files_are_written(reports):
  report = reports['dirichlet'][1]
  files = report['files']
  for name in ('client_sizes_png', 'label_heatmap_png'):
    with open(files[name], 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with open(files['stats_json']) as f:
    assert json.load(f) == json.loads(json.dumps(report))
  summary = stats.format_summary(report)
  assert 'clients: 20, examples: 1437' in summary and 'mean TV distance' in summary


def test_client_sample():
  report = stats.compute_stats(_digits('iid'), max_clients=5, seed=3)
  assert report['num_clients'] == 20 and report['num_clients_analyzed'] == 5
  assert len(report['clients']) == 5 and 'files' not in report


def _fake_task(kind, ys, label_names=None):
  data = tff.simulation.datasets.TestClientData(collections.OrderedDict(
      (cid, collections.OrderedDict(x=np.zeros(len(y), np.float32), y=np.array(y)))
      for cid, y in ys.items()))
  return types.SimpleNamespace(name='fake', description='', prediction_kind=kind, train_data=data,
                               label_names=label_names)


def test_next_token_labels_are_top_tokens_plus_other():
  # Token 0 is padding. Pooled counts: 5 -> 4, 7 -> 3, 9 -> 2, 3 -> 1.
  task = _fake_task('next_token', {'a': [[5, 5, 7, 0], [5, 9, 0, 0]], 'b': [[7, 7, 3, 9]],
                                   'c': [[5, 0, 0, 0]]})
  report = stats.compute_stats(task, top_k_tokens=2)
  assert report['labels'] == [5, 7, 'other']
  assert report['clients']['a'] == {'size': 2, 'label_counts': [3, 1, 1],
                                    'tv_distance': pytest.approx(0.5 * (
                                        abs(3 / 5 - 4 / 10) + abs(1 / 5 - 3 / 10) +
                                        abs(1 / 5 - 3 / 10)))}
  assert report['clients']['b']['label_counts'] == [0, 2, 2]
  assert report['num_examples'] == 4


def test_multi_label_counts_each_tag():
  task = _fake_task('multi_label', {'a': [[1., 1., 0.], [1., 0., 0.]], 'b': [[0., 0., 1.]],
                                    'c': [[0., 0., 0.]]})  # c: no known tag
  report = stats.compute_stats(task)
  assert report['labels'] == [0, 1, 2]
  assert report['clients']['a']['label_counts'] == [2, 1, 0]
  assert report['clients']['c']['tv_distance'] is None
  assert report['skew']['clients_without_labels'] == 1


def test_bad_arguments():
  with pytest.raises(ValueError, match='max_clients must be >= 0, got -1'):
    stats.compute_stats(_digits('iid'), max_clients=-1)


def test_labels_read_as_the_task_names_them_and_the_heatmap_says_which_clients(tmp_path):
  task = _fake_task('next_token', {'a': [[5, 5, 7, 0]], 'b': [[7, 7, 3, 9]], 'c': [[5, 9, 0, 0]]},
                    label_names={5: 'e', 7: '␣', 3: 'q'})
  report = stats.compute_stats(task, str(tmp_path), top_k_tokens=2, heatmap_clients=2, seed=1)
  assert report['labels'] == [5, 7, 'other']
  assert report['label_names'] == ['e', '␣', 'other']  # the characters, not the token ids
  shown = report['heatmap_clients']
  assert len(shown) == 2 and set(shown) <= {'a', 'b', 'c'}
  assert 'heatmap: a random sample of 2 of the 3 clients' in stats.format_summary(report)
  digits = stats.compute_stats(_digits('iid'), max_clients=4)
  assert digits['label_names'] == [str(label) for label in digits['labels']]  # ids are labels
