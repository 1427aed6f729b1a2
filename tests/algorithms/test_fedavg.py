"""FedAvg on IID seed_linear approaches the closed-form least-squares solution."""

import numpy as np
import tensorflow_federated as tff

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.simulation import backends
from tff_lab.simulation import plan as plan_lib


def _pooled_train(task):
  xs, ys = [], []
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    xs.append(batch['x'].numpy())
    ys.append(batch['y'].numpy())
  return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)


def test_fedavg_approaches_least_squares():
  seed = 1
  task = tasks.create_task('seed_linear', {'num_clients': 8, 'iid': True, 'seed': seed})
  task = task.with_train_spec(batch_size=8, num_epochs=2)
  process = algorithms.build_fedavg(task, tff.learning.optimizers.build_sgdm(0.02))
  state = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, seed))
  x, y = _pooled_train(task)
  theta_star = np.linalg.lstsq(x, y, rcond=None)[0]
  start = np.linalg.norm(process.get_model_weights(state).trainable[0] - theta_star)
  planner = plan_lib.RoundPlanner(task, len(task.train_data.client_ids), seed=seed)
  runner = backends.ProcessRunner(process, task)
  for r in range(1, 31):
    state = runner.next(state, planner.plan(r)).state
  end = np.linalg.norm(process.get_model_weights(state).trainable[0] - theta_star)
  # IID clients, small steps: FedAvg's fixed point is near the pooled least-squares solution.
  assert end < 0.05 * np.linalg.norm(theta_star), (start, end, theta_star.ravel())
  assert end < 0.1 * start


def test_unweighted_and_weighted_differ_only_when_sizes_differ():
  task = tasks.create_task('synthetic', {'num_devices': 5, 'seed': 0})
  task = task.with_train_spec(batch_size=10, shuffle_buffer_size=1)
  opt = tff.learning.optimizers.build_sgdm(0.01)
  weighted = algorithms.build_fedavg(task, opt, weighted=True)
  unweighted = algorithms.build_fedavg(task, opt, weighted=False)
  w0 = plan_lib.initial_model_weights(task, 0)
  ids = task.train_data.client_ids
  data = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c)) for c in ids]
  sizes = [len(task.train_data.create_tf_dataset_for_client(c)) for c in ids]
  assert len(set(sizes)) > 1
  a = weighted.next(weighted.set_model_weights(weighted.initialize(), w0), data).state
  b = unweighted.next(unweighted.set_model_weights(unweighted.initialize(), w0), data).state
  assert not np.allclose(weighted.get_model_weights(a).trainable[0],
                         unweighted.get_model_weights(b).trainable[0])
