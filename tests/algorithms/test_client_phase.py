"""The shared client phase: per-client results in the clients' order, the local step applied."""

import collections

import numpy as np

from tff_lab import tasks
from tff_lab.algorithms import client_phase
from tff_lab.algorithms import spec
from tff_lab.simulation import plan as plan_lib


def test_per_client_results_follow_the_local_step_and_the_clients_order():
  task = tasks.create_task('seed_linear', {'num_clients': 4})
  task = task.with_train_spec(batch_size=1000, num_epochs=2, shuffle_buffer_size=1)
  weights = plan_lib.initial_model_weights(task, 0)
  lr, ids = 0.1, list(task.train_data.client_ids)
  data = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c)) for c in ids]
  plain = client_phase.build_client_phase(task, lr, spec.PLAIN_SGD)(weights, data)
  shift = [np.full_like(w, 0.5) for w in weights.trainable]
  corrected = client_phase.build_client_phase(task, lr, spec.LocalStep(
      lambda g, w, a, h, aux=None: tuple(x + c for x, c in zip(g, aux['correction']))),
      with_correction=True)(weights, [collections.OrderedDict(data=d, correction=shift)
                                      for d in data])
  for cid, p, c in zip(ids, plain, corrected):
    x = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(1000)))
    xs, ys = x['x'].numpy().astype(np.float64), x['y'].numpy().astype(np.float64).reshape(-1, 1)
    assert int(p['num_steps']) == 1 and int(p['num_examples']) == 2 * len(ys)  # 2 epochs, 1 batch
    theta = weights.trainable[0].astype(np.float64)
    grad = 2.0 / (2 * len(ys)) * np.vstack([xs, xs]).T @ (np.vstack([xs, xs]) @ theta
                                                          - np.vstack([ys, ys]))
    np.testing.assert_allclose(p['delta'][0], lr * grad, atol=1e-6)
    np.testing.assert_allclose(c['delta'][0], lr * (grad + 0.5), atol=1e-6)
