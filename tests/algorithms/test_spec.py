"""Algorithm specs: validation asks the spec; the local step is written once for every backend."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_lab.algorithms import fedavg
from tff_lab.algorithms import registry
from tff_lab.algorithms import spec as spec_lib
from tff_lab.training import config as config_lib


def test_builtin_specs_say_what_they_support():
  assert registry.names()[:4] == ('fedavg', 'fedavg_unweighted', 'fedsgd', 'fedprox')
  assert [registry.get(n).weighted for n in ('fedavg', 'fedavg_unweighted')] == [True, False]
  fedsgd = registry.get('fedsgd')
  assert not fedsgd.runs_in_graph and not fedsgd.supports_update_attacks
  assert registry.get('fedprox').runs_in_graph and list(registry.get('fedprox').hparams) == ['mu']


def test_hyperparameters_are_checked_by_name_and_range():
  spec = registry.get('fedprox')
  assert spec.resolve_hparams({}) == collections.OrderedDict(mu=0.0)
  assert spec.resolve_hparams({'mu': 2}) == collections.OrderedDict(mu=2)
  with pytest.raises(ValueError, match=r"has no hyperparameter\(s\) \['lam'\]"):
    spec.resolve_hparams({'lam': 1.0})
  with pytest.raises(ValueError, match='mu must be >= 0'):
    spec.resolve_hparams({'mu': -0.5})
  with pytest.raises(ValueError, match='finite number'):
    spec.resolve_hparams({'mu': float('nan')})


def test_proximal_step_is_the_gradient_of_the_proximal_objective():
  rng = np.random.default_rng(0)
  g, w, w0 = (rng.normal(size=(3, 2)).astype(np.float32) for _ in range(3))
  out = spec_lib.PROXIMAL_SGD.gradient([tf.constant(g)], [tf.constant(w)], [tf.constant(w0)],
                                       {'mu': 0.7})
  np.testing.assert_allclose(out[0].numpy(), g + 0.7 * (w - w0), rtol=1e-6)
  same = spec_lib.PROXIMAL_SGD.gradient([tf.constant(g)], [tf.constant(w)], [tf.constant(w0)],
                                        {'mu': 0.0})
  np.testing.assert_array_equal(same[0].numpy(), g)
  np.testing.assert_array_equal(spec_lib.PLAIN_SGD.gradient([g], [w], [w0], {})[0], g)


def test_registration_refuses_duplicates_and_non_specs():
  with pytest.raises(ValueError, match="'fedavg' is already registered"):
    spec_lib.register(fedavg.FEDAVG)
  with pytest.raises(TypeError, match='takes an AlgorithmSpec'):
    spec_lib.register('fedavg')
  with pytest.raises(ValueError, match="unknown algorithm 'no_such_algorithm'; choose one of"):
    registry.get('no_such_algorithm')


def test_validation_asks_the_spec_not_the_name():
  import dataclasses  # pylint: disable=g-import-not-at-top
  # A registered variant of FedSGD under another name gets FedSGD's refusals.
  clone = dataclasses.replace(registry.get('fedsgd'), name='fedsgd_clone')
  spec_lib.register(clone)
  try:
    with pytest.raises(config_lib.ConfigError, match='--algorithm=fedsgd_clone sends gradients'):
      config_lib.ExperimentConfig(algorithm='fedsgd_clone', byzantine_fraction=0.2).validate()
    with pytest.raises(config_lib.ConfigError, match='not fedsgd_clone'):
      config_lib.ExperimentConfig(algorithm='fedsgd_clone', simulation='fused').validate()
    with pytest.raises(config_lib.ConfigError, match='only applies to --algorithm=fedprox'):
      config_lib.ExperimentConfig(algorithm='fedsgd_clone', algorithm_hparams={'mu': 0.1}).validate()
  finally:
    del spec_lib._SPECS['fedsgd_clone']  # pylint: disable=protected-access


def _declaring_spec(**fields):
  """unweighted FedAvg, registered under another name with `fields` declaring what it does not
  run (its rounds its own runner's, a stand-in that is never built)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  spec = dataclasses.replace(registry.get('fedavg_unweighted'), name='declaring', **fields)
  spec_lib.register(spec)
  return spec


@pytest.mark.parametrize('fields,settings,message', [
    ({'requires_client_sgd': 'its reason'}, {'client_optimizer': 'adam'},
     r'--algorithm=declaring runs client SGD \(its reason\), not --client_optimizer=adam'),
    ({'aggregates_with': 'its own rule'}, {'aggregation': {'clip_norm': 1.0}},
     r"aggregates with its own rule in its own rounds; it cannot run the aggregation settings "
     r"\['clip_norm'\]"),
    ({'supports_secure_aggregation': False}, {'aggregation': {'secure_aggregation': True}},
     'declaring cannot run --secure_aggregation'),
    ({'simulates_update_attacks': False}, {'byzantine_fraction': 0.2},
     'declaring does not simulate update attacks'),
    ({'build_runner': object, 'fused_runner': True},
     {'simulation': 'async'}, 'not --algorithm=declaring'),
    ({'build_runner': object}, {'simulation': 'fused'},
     'declaring runs its own rounds on --simulation=tff, not --simulation=fused'),
])
def test_what_a_spec_declares_it_does_not_run_is_refused_once_in_one_line(fields, settings,
                                                                          message):
  _declaring_spec(**fields)
  try:
    config = config_lib.ExperimentConfig(algorithm='declaring', **settings)
    with pytest.raises(config_lib.ConfigError, match=message) as e:
      config.validate()
    assert '\n' not in str(e.value)
    # Without the declaration, the same settings are valid: the field, not the name, refused.
    config_lib.ExperimentConfig(algorithm='fedavg_unweighted', **settings).validate()
  finally:
    del spec_lib._SPECS['declaring']  # pylint: disable=protected-access


def test_check_config_runs_the_declared_limits_then_the_spec_check_once_per_backend():
  calls = []
  _declaring_spec(requires_client_sgd='r', check=lambda config: calls.append(config.simulation))
  try:
    config_lib.ExperimentConfig(algorithm='declaring').validate()  # auto: fused accepts it
    assert calls == ['fused']
    calls.clear()
    config_lib.ExperimentConfig(algorithm='declaring', simulation='tff').validate()
    assert calls == ['tff']
    calls.clear()
    with pytest.raises(config_lib.ConfigError, match='runs client SGD'):
      config_lib.ExperimentConfig(algorithm='declaring', client_optimizer='adam').validate()
    assert not calls  # the declared limit refused it before the spec's own check ran
  finally:
    del spec_lib._SPECS['declaring']  # pylint: disable=protected-access
  assert registry.get('scaffold').simulations == ('tff', 'fused')
  assert registry.get('ditto').simulations == ('tff',)
  assert registry.get('fedavg').simulations == ()
