"""The seed_linear task's two models."""

import numpy as np
import pytest

from tff_lab import tasks


@pytest.mark.parametrize('model, labels, kind', [('linear', {-1.0, 1.0}, 'sign'),
                                                  ('logistic', {0.0, 1.0}, 'binary')])
def test_models_and_label_encodings(model, labels, kind):
  task = tasks.create_task('seed_linear', {'model': model})
  assert task.prediction_kind == kind
  assert set(np.unique(task.centralized_test_data[1])) == labels
  assert task.model_fn().count_params() == (2 if model == 'linear' else 3)
