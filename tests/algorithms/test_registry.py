"""Algorithm names map to learning processes."""

import pytest

from tff_lab import algorithms
from tff_lab import tasks


@pytest.mark.parametrize('name', algorithms.ALGORITHMS)
def test_each_algorithm_builds_a_learning_process(name):
  task = tasks.create_task('seed_linear')
  args = (name, task, algorithms.create_optimizer('sgd', 0.1),
          algorithms.create_optimizer('sgd', 1.0))
  stateful = algorithms.registry.get(name).build_runner is not None
  if stateful:  # its rounds run through its own runner: the process serves the state's structure
    with pytest.raises(ValueError, match='its own runner'):
      algorithms.create_learning_process(*args)
  process = algorithms.create_learning_process(
      *args, hparams={'mu': 0.1} if name == 'fedprox' else None, state_only=stateful)
  state = process.initialize()
  assert process.get_model_weights(state).trainable[0].shape == (2, 1)


def test_unknown_algorithm():
  with pytest.raises(ValueError, match="unknown algorithm 'fedadam'"):
    algorithms.check_algorithm('fedadam')
