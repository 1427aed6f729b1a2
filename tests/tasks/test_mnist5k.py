"""The mnist5k task: McMahan et al.'s IID and pathological partitions, 2NN and CNN."""

import numpy as np
import pytest

from tff_lab import tasks


def _labels(data):
  return {c: next(iter(data.create_tf_dataset_for_client(c).batch(10_000)))['y'].numpy()
          for c in data.client_ids}


@pytest.mark.parametrize('partition', ['iid', 'shards'])
def test_partitions(partition):
  task = tasks.create_task('mnist5k', {'partition': partition, 'num_clients': 100})
  train, test = _labels(task.train_data), _labels(task.test_data)
  assert len(train) == len(test) == 100
  sizes = [len(train[c]) + len(test[c]) for c in train]
  assert sum(sizes) == 5000 and set(sizes) == {50}  # Every image used once; 50 per client.
  assert sum(len(t) for t in test.values()) == len(task.centralized_test_data[1])
  distinct = [len(set(train[c]) | set(test[c])) for c in train]
  if partition == 'shards':  # 200 label-sorted shards of 25, two per client.
    assert max(distinct) <= 2
  else:
    assert np.mean(distinct) > 8


def test_models():
  task_2nn = tasks.create_task('mnist5k', {'model': '2nn', 'num_clients': 10})
  assert task_2nn.model_fn().count_params() == 199_210  # McMahan et al.'s 2NN on MNIST.
  task = tasks.create_task('mnist5k', {'model': 'cnn', 'num_clients': 10})
  model = task.model_fn()
  assert model.count_params() == 1_663_370
  batch = next(iter(task.preprocess_eval(task.test_data.create_tf_dataset_for_client(
      task.test_data.client_ids[0]))))
  probs = model(batch['x']).numpy()
  assert probs.shape == (len(batch['y']), 10)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize('options, match', [({'partition': 'dirichlet'}, 'partition'),
                                            ({'model': 'mlp'}, 'model'),
                                            ({'partition': 'iid', 'num_clients': 2501},
                                             'min_size=2')])
def test_bad_options(options, match):
  with pytest.raises(ValueError, match=match):
    tasks.create_task('mnist5k', options)
