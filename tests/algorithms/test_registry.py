"""Algorithm names map to learning processes."""

import pytest

from tff_lab import algorithms
from tff_lab import tasks


@pytest.mark.parametrize('name', algorithms.ALGORITHMS)
def test_each_algorithm_builds_a_learning_process(name):
  task = tasks.create_task('seed_linear')
  process = algorithms.create_learning_process(
      name, task, algorithms.create_optimizer('sgd', 0.1), algorithms.create_optimizer('sgd', 1.0),
      mu=0.1 if name == 'fedprox' else 0.0)
  state = process.initialize()
  assert process.get_model_weights(state).trainable[0].shape == (2, 1)


def test_unknown_algorithm():
  with pytest.raises(ValueError, match="unknown algorithm 'fedadam'"):
    algorithms.check_algorithm('fedadam')
