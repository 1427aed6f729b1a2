"""The synthetic task wraps FedProx's generator with the 60->10 softmax model."""

from tff_lab import tasks
from tff_lab.data import synthetic


def test_synthetic_task_matches_generator():
  task = tasks.create_task('synthetic', {'alpha': 0.5, 'beta': 0.5, 'seed': 3})
  devices = synthetic.generate_synthetic(alpha=0.5, beta=0.5, seed=3)
  sizes = [len(task.train_data.create_tf_dataset_for_client(c)) for c in task.train_data.client_ids]
  assert sizes == [len(d.y_train) for d in devices]
  assert task.model_fn().count_params() == 610
