"""Aggregation flags generated from AggregationSettings."""

import dataclasses

from absl import flags

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
