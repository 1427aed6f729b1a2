"""FedSGD with full-batch clients equals centralised gradient descent (computed in NumPy)."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.simulation import plan as plan_lib


def _client_arrays(task):
  out = []
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out.append((batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64)))
  return out


@pytest.mark.parametrize('clients_per_round', [10, 4])
def test_fedsgd_equals_centralised_gradient_descent(clients_per_round):
  lr, rounds, seed = 0.3, 10, 3
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': seed})
  # Full-batch clients: one batch holds a client's whole dataset, so each client contributes one
  # gradient (its mean-loss gradient); FedSGD weights clients by example count.
  task = task.with_train_spec(batch_size=10_000, shuffle_buffer_size=1)
  process = algorithms.build_fedsgd(task, tff.learning.optimizers.build_sgdm(learning_rate=lr))
  theta0 = plan_lib.initial_model_weights(task, seed)
  state = process.set_model_weights(process.initialize(), theta0)
  clients = dict(zip(task.train_data.client_ids, _client_arrays(task)))

  theta = theta0.trainable[0].astype(np.float64)  # [2, 1], f(x) = x @ theta
  planner = plan_lib.RoundPlanner(task, clients_per_round, seed=seed)
  for r in range(1, rounds + 1):
    sampled = planner.plan(r).sampled
    state = process.next(state, [task.preprocess_train(
        task.train_data.create_tf_dataset_for_client(c)) for c in sampled]).state
    # Centralised GD on the union of the sampled clients' data, loss = mean((x θ - y)²).
    x = np.concatenate([clients[c][0] for c in sampled])
    y = np.concatenate([clients[c][1] for c in sampled])
    grad = 2.0 / len(y) * x.T @ (x @ theta - y)
    theta = theta - lr * grad
    got = process.get_model_weights(state).trainable[0]
    np.testing.assert_allclose(got, theta, atol=1e-5, rtol=0,
                               err_msg=f'FedSGD diverges from centralised GD at round {r}')
  assert np.abs(theta - theta0.trainable[0]).max() > 0.05  # the test moved the weights
