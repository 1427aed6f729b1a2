"""One definition of a correct prediction per kind."""

import numpy as np
import pytest

from tff_lab.metrics import accuracy


@pytest.mark.parametrize('kind, y_true, y_pred, expected', [
    ('sign', [[1.0], [-1.0], [1.0], [-1.0]], [[0.3], [0.2], [-0.1], [-4.0]], [1, 0, 0, 1]),
    ('binary', [[1.0], [0.0], [1.0]], [[0.9], [0.7], [0.2]], [1, 0, 0]),
    ('sparse_categorical', [2, 0, 1], [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]],
     [1, 1, 0]),
])
def test_correct_predictions(kind, y_true, y_pred, expected):
  got = accuracy.correct_predictions(kind, np.array(y_true, np.float32),
                                     np.array(y_pred, np.float32)).numpy()
  np.testing.assert_array_equal(got, expected)
  metric = accuracy.Accuracy(kind)
  metric.update_state(np.array(y_true, np.float32), np.array(y_pred, np.float32))
  assert metric.name == 'accuracy'
  assert metric.result().numpy() == pytest.approx(np.mean(expected))


def test_unknown_kind():
  with pytest.raises(ValueError, match='unknown prediction kind'):
    accuracy.Accuracy('top5')
