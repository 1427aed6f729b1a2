"""tasks.from_arrays: a task on your own arrays, with the toolkit's partitions."""

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import tasks


def _arrays(n=120, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 3)).astype(np.float32)
  return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)


def _model():
  return tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(3,)),
                              tf.keras.layers.Dense(3, activation='softmax')])


def _all_examples(data):
  return sum(len(list(data.create_tf_dataset_for_client(c))) for c in data.client_ids)


@pytest.mark.parametrize('partition', ['iid', 'dirichlet', 'shards'])
def test_every_example_lands_in_one_clients_train_or_test_split(partition):
  x, y = _arrays()
  task = tasks.from_arrays(x, y, model_fn=_model, partition=partition, num_clients=6, alpha=0.3)
  assert len(task.train_data.client_ids) == 6
  assert task.train_data.client_ids == task.test_data.client_ids
  assert _all_examples(task.train_data) + _all_examples(task.test_data) == len(x)
  assert len(task.centralized_test_data[0]) == _all_examples(task.test_data)
  pooled = np.concatenate([task.centralized_test_data[0]] + [
      np.stack([e['x'] for e in task.train_data.create_tf_dataset_for_client(c).as_numpy_iterator()])
      for c in task.train_data.client_ids])
  np.testing.assert_array_equal(np.sort(pooled, axis=0), np.sort(x, axis=0))
  assert isinstance(task.loss_fn(), tf.keras.losses.SparseCategoricalCrossentropy)


def test_natural_groups_and_given_indices():
  x, y = _arrays(40)
  groups = np.repeat(['a', 'b', 'c', 'd'], 10)
  task = tasks.from_arrays(x, y, model_fn=_model, partition='natural', groups=groups)
  assert len(task.train_data.client_ids) == 4
  given = tasks.from_arrays(x, y, model_fn=_model, partition=[np.arange(0, 20),
                                                              np.arange(20, 40)])
  sizes = [len(list(given.train_data.create_tf_dataset_for_client(c)))
           for c in given.train_data.client_ids]
  assert len(sizes) == 2 and sum(sizes) + _all_examples(given.test_data) == 40


@pytest.mark.parametrize('kwargs, message', [
    (dict(y=np.zeros(5)), 'one entry per example'),
    (dict(partition='zipf'), "unknown partition 'zipf'"),
    (dict(partition='natural'), 'needs groups'),
    (dict(groups=np.zeros(120)), "groups only applies to partition='natural'"),
    (dict(partition=[np.arange(200)]), 'must index the 120 examples'),
    (dict(prediction_kind='ranking'), "unknown prediction_kind 'ranking'"),
    (dict(prediction_kind='next_token'), 'has no default loss'),
    (dict(test_fraction=1.5), r'test_fraction must be in \(0, 1\)'),
])
def test_bad_input_is_one_line(kwargs, message):
  x, y = _arrays()
  args = dict(x=x, y=y, model_fn=_model)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message) as e:
    tasks.from_arrays(args.pop('x'), args.pop('y'), **args)
  assert '\n' not in str(e.value)
