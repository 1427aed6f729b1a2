"""Federated evaluation against NumPy: sums, weighted accuracy, per-client distribution."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import evaluation
from tff_lab import tasks
from tff_lab.evaluation import federated
from tff_lab.simulation import plan as plan_lib


def test_histogram_percentile_matches_numpy():
  rng = np.random.default_rng(0)
  for values in (rng.random(37), rng.beta(0.5, 0.5, 200), np.array([0.0, 0.0, 1.0, 0.5])):
    hist = np.bincount(np.minimum((values * federated.NUM_BINS).astype(int),
                                  federated.NUM_BINS - 1), minlength=federated.NUM_BINS)
    for q in (10, 50, 90):
      assert federated.histogram_percentile(hist, q) == pytest.approx(
          np.percentile(values, q), abs=2.0 / federated.NUM_BINS)


def test_federated_evaluation_against_numpy():
  task = tasks.create_task('seed_linear', {'num_clients': 7, 'iid': False, 'noise': 1.5,
                                           'seed': 2})
  weights = plan_lib.initial_model_weights(task, 0)
  theta = weights.trainable[0]
  result = evaluation.evaluate_federated(task, weights)

  losses, correct, counts, client_acc = [], [], [], []
  for cid in task.test_data.client_ids:
    data = list(task.test_data.create_tf_dataset_for_client(cid).as_numpy_iterator())
    x = np.stack([e['x'] for e in data])
    y = np.stack([e['y'] for e in data])
    pred = x @ theta
    losses.append(np.sum((pred - y) ** 2))
    hits = np.sum(np.where(pred >= 0, 1.0, -1.0) == y)
    correct.append(hits)
    counts.append(len(y))
    client_acc.append(hits / len(y))
  assert result['num_clients'] == 7 and result['num_examples'] == sum(counts)
  assert result['loss'] == pytest.approx(sum(losses) / sum(counts), rel=1e-5)
  assert result['accuracy'] == pytest.approx(sum(correct) / sum(counts))
  assert result['client_accuracy_mean'] == pytest.approx(np.mean(client_acc), abs=1e-6)
  for q in (10, 90):
    assert result[f'client_accuracy_p{q}'] == pytest.approx(
        np.percentile(client_acc, q), abs=2.0 / federated.NUM_BINS)
  assert len(set(client_acc)) > 2  # the skewed clients really differ


def test_federated_and_centralised_agree_on_the_pooled_test_set():
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 6})
  weights = plan_lib.initial_model_weights(task, 1)
  fed = evaluation.evaluate_federated(task, weights)
  central = evaluation.evaluate_centralized(task, weights)
  assert fed['num_examples'] == central['num_examples']
  assert fed['accuracy'] == pytest.approx(central['accuracy'])
  assert fed['loss'] == pytest.approx(central['loss'], rel=1e-5)


def test_federated_evaluation_type_signature():
  task = tasks.create_task('seed_linear')
  comp = federated.build_federated_evaluation(task)
  params = comp.type_signature.parameter
  assert params[0].placement is tff.SERVER and params[1].placement is tff.CLIENTS
  assert comp.type_signature.result.placement is tff.SERVER


def test_evaluation_in_chunks_reports_progress_and_the_same_result():
  task = tasks.create_task('seed_linear', {'num_clients': 7, 'iid': False, 'seed': 2})
  weights = plan_lib.initial_model_weights(task, 0)
  comp = federated.build_federated_evaluation(task)
  whole = federated.evaluate_federated(task, weights, comp, chunk_clients=100)
  calls = []
  chunked = federated.evaluate_federated(task, weights, comp, chunk_clients=3,
                                         progress=calls.append)
  assert calls == [3, 3, 1]  # one callback per chunk, with its clients
  assert chunked.keys() == whole.keys()
  for key, value in whole.items():
    assert chunked[key] == pytest.approx(value, rel=1e-6), key
  assert chunked['num_clients'] == 7


@pytest.mark.parametrize('bad', [0, -1, 2.5, True])
def test_bad_chunk_size_is_one_line(bad):
  task = tasks.create_task('seed_linear', {'num_clients': 3})
  with pytest.raises(ValueError, match='chunk_clients must be a positive integer'):
    federated.evaluate_federated(task, plan_lib.initial_model_weights(task, 0), chunk_clients=bad)
