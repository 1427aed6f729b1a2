"""Composing processes around a client work, and the state-only processes of the in-graph paths.

A state-only process (`runs_elsewhere=True`) must be indistinguishable from the real one in
everything a backend that never calls `next` uses: the initial state (values and types), the
hyperparameters, the model weights' accessors. Its `next` must refuse to run.
"""

import numpy as np
import pytest
import tensorflow as tf

from tff_lab.algorithms import composition
from tff_lab.simulation import backends
from tff_lab.training import config as config_lib
from tff_lab.training import loop

# Each case reaches a different composition: TFF's builders (weighted and unweighted, with their
# client optimiser's hyperparameters as client-work state), tff_lab's client work (FedProx,
# attacks, a client-rate schedule as state), and aggregator stacks with state.
CASES = {
    'fedavg_sgdm_adam': dict(client_optimizer='sgdm', server_optimizer='adam'),
    'fedavg_unweighted_dp': dict(algorithm='fedavg_unweighted',
                                 aggregation={'dp': 'adaptive', 'clip_norm': 0.1,
                                              'noise_multiplier': 0.1}),
    'fedprox_attacks_median': dict(algorithm='fedprox', algorithm_hparams={'mu': 0.1},
                                   byzantine_fraction=0.25, attack='sign_flip',
                                   aggregation={'aggregator': 'median'}),
    'fedavg_schedule_adaptive_clip': dict(client_lr_schedule={'schedule': 'step'},
                                          aggregation={'adaptive_clip': True, 'clip_norm': 0.5}),
}


def _config(**kwargs):
  return config_lib.ExperimentConfig(task='seed_linear', clients_per_round=4, eval_every=0,
                                     simulation='fused', progress=False, **kwargs)


def _assert_same(a, b):
  tf.nest.assert_same_structure(a, b, check_types=False)
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('name', list(CASES))
def test_the_state_only_process_has_the_real_ones_state(name):
  config = _config(**CASES[name])
  config.validate()
  assert not backends.calls_process_next(config)
  task = loop.build_task(config)
  real = loop.build_process(config, task)
  state_only = loop.build_process(config, task, runs_elsewhere=True)
  assert isinstance(state_only, composition.StateOnlyProcess)
  assert not isinstance(real, composition.StateOnlyProcess)

  # As strings: DP states hold namedtuple classes that dp_accounting makes anew per process, so
  # even two real processes' types differ in their Python containers.
  assert str(state_only.initialize.type_signature) == str(real.initialize.type_signature)
  assert str(state_only.get_hparams.type_signature) == str(real.get_hparams.type_signature)
  # The loop's initial state: initialize(), then the seeded initial weights
  # (`initialize` itself draws unseeded weights, in either process).
  weights = loop.initial_model_weights(task, config.seed)
  real_state = real.set_model_weights(real.initialize(), weights)
  state = state_only.set_model_weights(state_only.initialize(), weights)
  _assert_same(state, real_state)
  _assert_same(state_only.get_hparams(state), real.get_hparams(real_state))
  _assert_same(state_only.get_model_weights(state), real.get_model_weights(real_state))

  with pytest.raises(RuntimeError, match='serves only for the state'):
    state_only.next  # pylint: disable=pointless-statement


def test_backends_that_call_next_get_the_real_process():
  for simulation in ('tff', 'async'):
    assert backends.calls_process_next(config_lib.ExperimentConfig(simulation=simulation))
  secure = config_lib.ExperimentConfig(simulation='fused',
                                       aggregation={'secure_aggregation': True})
  assert backends.calls_process_next(secure)


def test_an_algorithm_without_a_state_only_builder_gets_its_real_process():
  config = _config(algorithm='mime_lite')
  task = loop.build_task(config)
  process = loop.build_process(config, task, runs_elsewhere=True)
  assert not isinstance(process, composition.StateOnlyProcess)
  process.next  # pylint: disable=pointless-statement
