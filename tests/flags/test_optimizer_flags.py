"""Prefixed optimiser flags generated from tff.learning.optimizers."""

from absl import flags
import pytest

from tff_lab.flags import optimizer_flags


def test_optimizer_flags_generated_for_every_hparam(parse):
  for name in ('client_sgdm_momentum', 'server_adam_beta_1', 'server_yogi_epsilon',
               'server_adagrad_initial_preconditioner_value'):
    assert name in flags.FLAGS
  parse('--server_optimizer=adam', '--server_learning_rate=0.01', '--server_adam_beta_1=0.8')
  got = optimizer_flags.optimizer_settings_from_flags('server')
  assert got['server_optimizer'] == 'adam' and got['server_learning_rate'] == 0.01
  assert got['server_optimizer_hparams'] == {'beta_1': 0.8, 'beta_2': 0.999, 'epsilon': 1e-07}


def test_hparam_of_other_optimizer_refused(parse):
  parse('--client_optimizer=sgd', '--client_sgdm_momentum=0.5')
  with pytest.raises(ValueError, match='--client_sgdm_momentum is set but --client_optimizer=sgd'):
    optimizer_flags.optimizer_settings_from_flags('client')
