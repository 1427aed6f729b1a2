"""Centralised evaluation against a direct Keras computation."""

import numpy as np
import pytest

from tff_lab import evaluation
from tff_lab import tasks
from tff_lab.evaluation import centralized
from tff_lab.simulation import plan as plan_lib


def test_centralized_matches_keras():
  task = tasks.create_task('synthetic', {'num_devices': 5, 'seed': 1})
  weights = plan_lib.initial_model_weights(task, 3)
  model = centralized.keras_model_with_weights(task, weights)
  x, y = task.centralized_test_data
  probs = model.predict(x, verbose=0)
  result = evaluation.evaluate_centralized(task, weights)
  assert result['num_examples'] == len(y)
  assert result['accuracy'] == pytest.approx(np.mean(np.argmax(probs, 1) == y))
  nll = -np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)))
  assert result['loss'] == pytest.approx(nll, rel=1e-4)
