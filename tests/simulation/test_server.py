"""The shared server step equals TFF's apply-optimizer finalizer, non-finite rejection included."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import algorithms
from tff_lab.simulation import server


@pytest.mark.parametrize('optimizer', [('sgd', 0.5), ('adam', 0.01), ('sgdm', 1.0)])
def test_server_step_equals_tffs_finalizer(optimizer):
  opt = algorithms.create_optimizer(*optimizer)
  weights = tff.learning.models.ModelWeights(
      trainable=[np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)],
      non_trainable=[])
  weights_type = tff.types.to_type(
      tff.learning.models.ModelWeights(trainable=[(np.float32, (2, 3)), (np.float32, (3,))],
                                       non_trainable=[]))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(opt, weights_type)
  fin_state = finalizer.initialize()
  state = tff.learning.templates.LearningAlgorithmState(weights, (), (), (), fin_state)
  rng = np.random.default_rng(1)
  for _ in range(3):
    delta = [rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    out = finalizer.next(fin_state, weights, delta)
    state, non_finite = server.apply_server_update(opt, state, delta)
    fin_state, weights = out.state, out.result
    for a, b in zip(state.global_model_weights.trainable, weights.trainable):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert non_finite == out.measurements['update_non_finite'] == 0
  bad = [np.full((2, 3), np.nan, np.float32), np.zeros(3, np.float32)]
  rejected, non_finite = server.apply_server_update(opt, state, bad)
  assert non_finite == finalizer.next(fin_state, weights, bad).measurements['update_non_finite']
  for a, b in zip(rejected.global_model_weights.trainable, state.global_model_weights.trainable):
    np.testing.assert_array_equal(a, b)
