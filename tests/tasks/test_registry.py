"""Task registry: every task builds, options come from signatures, errors are clear."""

import numpy as np
import pytest

from tff_lab import tasks
from tff_lab.data import tff_datasets


@pytest.mark.parametrize('name', tasks.task_names())
def test_every_task_builds_consistently(name):
  try:
    task = tasks.create_task(name)
  except tff_datasets.DatasetNotAvailableError as e:  # TFF's datasets need a download
    pytest.skip(str(e))
  assert task.name == name
  summary = task.summary()
  assert summary['num_train_clients'] == len(task.train_data.client_ids) > 1
  assert set(task.test_data.client_ids) == set(task.train_data.client_ids)
  x, y = task.centralized_test_data
  test_total = sum(len(task.test_data.create_tf_dataset_for_client(c))
                   for c in task.test_data.client_ids)
  assert len(x) == len(y) == test_total  # the pooled test set is the union of the test clients
  model = task.model_fn()
  preds = model(x[:4])
  assert preds.shape[0] == 4
  assert np.isfinite(float(task.loss_fn()(y[:4], preds)))


def test_options_are_read_from_signatures():
  options = tasks.task_options('digits')
  assert options['partition'] == 'dirichlet' and options['alpha'] == 0.5
  assert 'alpha' in tasks.task_options('synthetic') and 'model' in tasks.task_options('seed_linear')


def test_options_change_the_task():
  a = tasks.create_task('synthetic', {'num_devices': 7, 'iid': True})
  assert len(a.train_data.client_ids) == 7
  b = tasks.create_task('digits', {'num_clients': 10, 'partition': 'shards',
                                   'shards_per_client': 1, 'model': 'mlp'})
  for cid in b.train_data.client_ids:
    labels = [int(e['y']) for e in b.train_data.create_tf_dataset_for_client(cid)]
    # One shard is a contiguous run of the label-sorted data: consecutive classes only (~180
    # examples per shard against 174-183 per class, so at most three).
    assert max(labels) - min(labels) == len(set(labels)) - 1 and len(set(labels)) <= 3


@pytest.mark.parametrize('name, options, match', [
    ('cifar', None, "unknown task 'cifar'"),
    ('digits', {'alpah': 1.0}, r"no option\(s\) \['alpah'\]"),
    ('seed_linear', {'model': 'mlp'}, 'seed_linear model must be one of'),
    ('digits', {'model': 'resnet'}, 'digits model must be one of'),
])
def test_bad_task_requests(name, options, match):
  with pytest.raises(ValueError, match=match):
    tasks.create_task(name, options)
