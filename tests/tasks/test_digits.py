"""The digits task: partitions and models."""

import pytest

from tff_lab import tasks


@pytest.mark.parametrize('partition', ['iid', 'dirichlet', 'shards'])
def test_partitions_use_every_example_once(partition):
  task = tasks.create_task('digits', {'partition': partition, 'num_clients': 10, 'model': 'mlp'})
  total = sum(len(d.create_tf_dataset_for_client(c))
              for d in (task.train_data, task.test_data) for c in d.client_ids)
  assert total == 1797


def test_models():
  assert tasks.create_task('digits', {'model': 'mlp'}).model_fn().count_params() == (
      64 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10)
  assert tasks.create_task('digits', {'model': 'cnn'}).model_fn().output_shape == (None, 10)
