"""The in-graph evaluation against the TFF federated evaluation and the Keras centralised one."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import tasks
from tff_lab.evaluation import centralized
from tff_lab.evaluation import federated
from tff_lab.evaluation import fused
from tff_lab.evaluation import personalization
from tff_lab.simulation import plan as plan_lib

TASKS = [
    ('digits', {'model': 'mlp', 'num_clients': 9, 'seed': 1}),  # sparse_categorical
    ('seed_linear', {'num_clients': 7, 'iid': False, 'noise': 1.5, 'seed': 2}),  # sign
    ('breast_cancer_silos', {'num_silos': 4}),  # binary
]


def _trained_weights(task, seed):
  """Initial weights moved at random: a model that gets some clients right, not all."""
  weights = plan_lib.initial_model_weights(task, 0)
  rng = np.random.default_rng(seed)
  return tff.learning.models.ModelWeights(
      [w + rng.normal(0, 0.3, np.shape(w)).astype(np.float32) for w in weights.trainable],
      weights.non_trainable)


@pytest.mark.parametrize('name, options', TASKS, ids=[t[0] for t in TASKS])
def test_equals_the_tff_federated_and_the_keras_centralised_evaluation(name, options):
  task = tasks.create_task(name, options)
  assert fused.supports(task)
  # TFF's tracing first: a Keras model made in its graphs invalidates those made before.
  computation = federated.build_federated_evaluation(task)
  evaluation = fused.FusedEvaluation(task)
  for seed in (0, 1):  # twice: the second call reuses the test clients' examples
    weights = _trained_weights(task, seed)
    reference = federated.evaluate_federated(task, weights, computation)
    updates = []
    ours = evaluation.federated(weights, chunk_clients=3, progress=updates.append)
    assert list(ours) == list(reference)
    for key in reference:
      assert ours[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key
    assert sum(updates) == len(task.test_data.client_ids) and len(updates) > 1
    central = centralized.evaluate_centralized(task, weights)
    ours_central = evaluation.centralized(weights)
    assert list(ours_central) == list(central)
    for key in central:
      assert ours_central[key] == pytest.approx(central[key], rel=1e-5), key
  evaluation.close()


def test_a_subset_of_clients_and_the_per_client_distribution():
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 12, 'seed': 3})
  weights = _trained_weights(task, 4)
  ids = task.test_data.client_ids[2:9]
  computation = federated.build_federated_evaluation(task)
  evaluation = fused.FusedEvaluation(task)
  ours = evaluation.federated(weights, client_ids=ids)
  reference = federated.evaluate_federated(task, weights, computation, client_ids=ids)
  evaluation.close()
  assert ours['num_clients'] == len(ids) == reference['num_clients']
  # The spread across clients is real here, and both read it off the same histogram.
  assert ours['client_accuracy_p90'] > ours['client_accuracy_p10']
  for key in ('client_accuracy_mean', 'client_accuracy_p10', 'client_accuracy_p90', 'loss'):
    assert ours[key] == pytest.approx(reference[key], rel=1e-5), key


def test_batch_norm_models_keep_the_tff_evaluation():
  task = tasks.create_task('digits', {'model': 'cnn_bn', 'num_clients': 4})
  assert not fused.supports(task)
  with pytest.raises(ValueError, match='no non-trainable weights'):
    fused.FusedEvaluation(task)


def test_each_client_equals_the_per_client_tff_evaluation():
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 8, 'seed': 5})
  weights = _trained_weights(task, 6)
  ids = list(task.test_data.client_ids)
  computation = personalization.build_per_client_evaluation(task)
  evaluation = fused.FusedEvaluation(task)
  for subset in (ids, ids[1:6]):
    reference = personalization.evaluate_each(task, weights, subset, computation)
    ours = evaluation.each(weights, subset)
    assert len(ours) == len(subset)
    assert len({r['accuracy'] for r in ours}) > 1  # the clients differ
    for a, b in zip(ours, reference):
      assert list(a) == list(b)
      for key in b:
        assert a[key] == pytest.approx(b[key], rel=1e-5), key
