"""Task preprocessing follows TFF's ClientSpec: shuffle, repeat, take, batch."""

import numpy as np
import tensorflow as tf

from tff_lab import tasks


def _task():
  return tasks.create_task('seed_linear', {'num_clients': 3, 'examples_per_client': 25})


def test_preprocess_train_epochs_batches_and_cap():
  task = _task().with_train_spec(num_epochs=3, batch_size=4, shuffle_buffer_size=1)
  raw = task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0])
  n = len(raw)
  batches = list(task.preprocess_train(raw))
  assert sum(len(b['y']) for b in batches) == 3 * n
  assert all(len(b['y']) == 4 for b in batches[:-1])
  # shuffle_buffer_size=1 keeps the order: the first epoch is the raw order.
  first = np.concatenate([b['x'] for b in batches])[:n]
  np.testing.assert_array_equal(first, np.stack([e['x'] for e in raw.as_numpy_iterator()]))
  capped = task.with_train_spec(num_epochs=3, batch_size=4, max_elements=10)
  assert sum(len(b['y']) for b in capped.preprocess_train(raw)) == 10


def test_seeded_shuffle_is_deterministic_and_seed_dependent():
  task = _task().with_train_spec(shuffle_buffer_size=100, batch_size=100)
  raw = task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0])
  order = lambda seed: next(iter(task.preprocess_train(raw, seed=seed)))['x'].numpy()
  np.testing.assert_array_equal(order(1), order(1))
  assert not np.array_equal(order(1), order(2))


def test_batch_spec_and_tff_model():
  task = _task()
  spec = task.batch_spec
  assert spec['x'].shape.as_list() == [None, 2] and spec['x'].dtype == tf.float32
  metrics = task.metrics_fn()
  assert [m.name for m in metrics] == ['accuracy']
