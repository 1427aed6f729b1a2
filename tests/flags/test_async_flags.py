"""Asynchronous-simulation flags, generated from AsyncSettings."""

import dataclasses

from absl import flags

from tff_lab.flags import async_flags
from tff_lab.simulation import asynchronous


def test_one_flag_per_setting_with_its_default_and_help():
  for field in dataclasses.fields(asynchronous.AsyncSettings):
    assert flags.FLAGS[field.name].default == field.default, field.name
    assert flags.FLAGS[field.name].help == field.metadata['help'], field.name


def test_only_changed_settings_are_returned_and_they_validate(parse):
  parse('--simulation=async')
  assert async_flags.asynchrony_from_flags() == {}
  parse('--concurrency=7', '--buffer_size=3', '--staleness=constant', '--latency_sigma=0')
  settings = async_flags.asynchrony_from_flags()
  assert settings == {'concurrency': 7, 'buffer_size': 3, 'staleness': 'constant',
                      'latency_sigma': 0.0}
  assert asynchronous.AsyncSettings.from_dict(settings).resolve(10) == (7, 3)


def test_defining_twice_is_harmless():
  async_flags.define_async_flags()
  assert 'latency_file' in flags.FLAGS
