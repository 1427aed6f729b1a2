"""Aggregation flags generated from AggregationSettings."""

import dataclasses

from absl import flags
import pytest

from tff_lab import aggregators
from tff_lab.flags import aggregation_flags


def test_one_flag_per_setting_with_its_default():
  fields = {f.name: f.default for f in dataclasses.fields(aggregators.AggregationSettings)}
  for name in aggregation_flags.DERIVED:
    fields.pop(name)
  for name, default in fields.items():
    assert flags.FLAGS[name].default == default, name


def test_only_changed_settings_are_returned(parse):
  parse()
  assert aggregation_flags.aggregation_from_flags() == {}
  parse('--aggregator=median', '--bits=4', '--secure_aggregation', '--clip_norm=2.5')
  assert aggregation_flags.aggregation_from_flags() == {
      'aggregator': 'median', 'bits': 4, 'secure_aggregation': True, 'clip_norm': 2.5}


def test_secure_aggregation_flags_are_generated_and_validated(parse):
  parse('--secure_aggregation', '--secagg_active', '--secagg_private_metrics')
  settings = aggregation_flags.aggregation_from_flags()
  assert settings == {'secure_aggregation': True, 'secagg_active': True,
                      'secagg_private_metrics': True}
  aggregators.AggregationSettings(**settings).validate()
  parse('--secure_aggregation', '--secagg_threshold=5')  # 5 of clients_per_round=10
  with pytest.raises(ValueError) as error:
    aggregators.AggregationSettings(**aggregation_flags.aggregation_from_flags()).validate()
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith('secagg_threshold must be an integer in [6, clients_per_round=10]')
  assert 'strict majority of the clients (2t > n' in message and message.endswith('got 5')
  parse('--secagg_active')
  with pytest.raises(ValueError, match='secagg_active only applies with secure_aggregation'):
    aggregators.AggregationSettings(**aggregation_flags.aggregation_from_flags()).validate()


def _norm_mean(weighted: bool, max_norm: float = 1.0, passes: int = 1):
  del weighted, max_norm, passes


def test_a_registered_aggregator_gets_flags_and_its_options_are_recorded(parse):
  from tff_lab.aggregators import registry  # pylint: disable=g-import-not-at-top
  aggregators.register('t_flagagg', _norm_mean)
  try:
    aggregation_flags.define_aggregation_flags()  # after the --plugin imports
    aggregation_flags.define_aggregation_flags()  # nothing is defined twice
    parse('--aggregator=t_flagagg', '--t_flagagg_max_norm=2.5', '--clip_norm=3')
    assert aggregation_flags.aggregation_from_flags() == {
        'aggregator': 't_flagagg', 'clip_norm': 3.0,
        'aggregator_options': {'max_norm': 2.5, 'passes': 1}}
    parse('--aggregator=median', '--t_flagagg_passes=2')
    with pytest.raises(ValueError, match='--t_flagagg_passes is set but --aggregator=median'):
      aggregation_flags.aggregation_from_flags()
  finally:
    del registry._BUILDERS['t_flagagg']  # pylint: disable=protected-access
