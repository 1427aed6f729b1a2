"""Algorithm hyperparameter flags generated from the registered algorithm specs."""

import collections

from absl import flags
import pytest

from tff_lab import cli
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import spec as spec_lib
from tff_lab.flags import algorithm_flags
from tff_lab.training import config as config_lib


def test_only_given_hyperparameters_reach_the_config(parse):
  parse('--algorithm=fedprox')
  assert algorithm_flags.algorithm_hparams_from_flags() == {}
  assert cli.config_from_flags().algorithm_hparams == {}
  parse('--algorithm=fedprox', '--mu=0.25')
  config = cli.config_from_flags()
  assert config.algorithm_hparams == {'mu': 0.25}
  config.validate()
  parse('--algorithm=fedavg', '--mu=0.25')  # a flag of another algorithm's is refused
  with pytest.raises(config_lib.ConfigError, match='mu only applies to --algorithm=fedprox'):
    cli.config_from_flags().validate()


def test_help_names_the_algorithms_and_their_defaults():
  assert flags.FLAGS['mu'].default is None  # unset: the spec's default, which cannot drift
  assert 'fedprox: 0.0' in flags.FLAGS['mu'].help


def _spec(name, **hparams):
  return spec_lib.AlgorithmSpec(
      name=name, description='a test algorithm', build_process=fedavg.FEDAVG.build_process,
      build_client_work=fedavg.FEDAVG.build_client_work,
      hparams=collections.OrderedDict(hparams))


def test_a_registered_algorithm_gets_typed_flags(parse):
  spec_lib.register(_spec(
      't_hp_algo', t_hp_steps=spec_lib.Hyperparameter(3, 'steps', minimum=1),
      t_hp_kind=spec_lib.Hyperparameter('a', 'kind', choices=('a', 'b')),
      t_hp_on=spec_lib.Hyperparameter(False, 'switch')))
  try:
    algorithm_flags.define_algorithm_flags()  # what a console script does after its --plugins
    algorithm_flags.define_algorithm_flags()  # and again: nothing is defined twice
    parse('--algorithm=t_hp_algo', '--t_hp_steps=7', '--t_hp_kind=b', '--t_hp_on')
    config = cli.config_from_flags()
    assert config.algorithm_hparams == {'t_hp_steps': 7, 't_hp_kind': 'b', 't_hp_on': True}
    config.validate()
    with pytest.raises(flags.IllegalFlagValueError):
      parse('--t_hp_steps=2.5')  # an int hyperparameter's flag takes integers
    for bad, message in (({'t_hp_steps': 0}, 't_hp_steps must be >= 1'),
                         ({'t_hp_steps': 2.5}, 't_hp_steps must be an integer'),
                         ({'t_hp_kind': 'c'}, r"t_hp_kind must be one of \['a', 'b'\]"),
                         ({'t_hp_on': 1}, 't_hp_on must be a bool')):
      with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.ExperimentConfig(algorithm='t_hp_algo', algorithm_hparams=bad).validate()
  finally:
    del spec_lib._SPECS['t_hp_algo']  # pylint: disable=protected-access


def test_a_shared_name_must_keep_its_type():
  with pytest.raises(ValueError, match="hyperparameter 'mu' is a str, but algorithm 'fedprox' "
                     "has 'mu' as a float"):
    spec_lib.register(_spec('t_hp_clash', mu=spec_lib.Hyperparameter('x', 'a string mu')))
  assert 't_hp_clash' not in spec_lib.names()
