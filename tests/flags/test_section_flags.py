"""Flags generated from typed config sections (here the learning-rate schedules)."""

import dataclasses

from absl import flags
import pytest

from tff_lab import cli
from tff_lab.algorithms import schedules
from tff_lab.flags import section_flags
from tff_lab.training import config as config_lib


@dataclasses.dataclass(frozen=True)
class _Section:
  size: int = dataclasses.field(default=3, metadata={'help': 'a size'})
  rate: float = 0.5
  name: str = 'a'
  on: bool = False


def test_flags_take_the_fields_types_and_defaults():
  values = flags.FlagValues()
  section_flags.define_section_flags(_Section, 's_', flag_values=values)
  section_flags.define_section_flags(_Section, 's_', flag_values=values)  # once only
  values(['prog'])
  assert [values[f'--s_{n}'.lstrip('-')].default for n in ('size', 'rate', 'name', 'on')] == [
      3, 0.5, 'a', False]
  assert values['s_size'].help == 'a size'
  assert section_flags.section_from_flags(_Section, 's_', flag_values=values) == {}
  values(['prog', '--s_size=4', '--s_on', '--s_name=a'])  # a default given is no change
  assert section_flags.section_from_flags(_Section, 's_', flag_values=values) == {
      'size': 4, 'on': True}
  with pytest.raises(flags.IllegalFlagValueError):
    values(['prog', '--s_size=x'])


def test_schedule_flags_reach_the_config(parse):
  parse('--client_lr_schedule=step', '--client_lr_decay_rate=0.1', '--server_lr_warmup_rounds=5')
  config = cli.config_from_flags()
  assert config.client_lr_schedule == {'schedule': 'step', 'decay_rate': 0.1}
  assert config.server_lr_schedule == {'warmup_rounds': 5}
  config.validate()
  assert flags.FLAGS['client_lr_decay_rounds'].default == (
      schedules.LearningRateSchedule().decay_rounds)  # generated: the default cannot drift
  parse('--server_lr_decay_rate=0.1')
  with pytest.raises(config_lib.ConfigError, match='--server_lr_decay_rate has no effect with '
                     '--server_lr_schedule=constant'):
    cli.config_from_flags().validate()


def test_every_setting_flag_defaults_to_the_configs_default():
  """A flag's default cannot drift from ExperimentConfig's: each is read from it (or generated)."""
  defaults = config_lib.ExperimentConfig()
  without_flag = []
  for field in dataclasses.fields(config_lib.ExperimentConfig):
    value = getattr(defaults, field.name)
    if field.name not in flags.FLAGS or isinstance(value, dict):  # a dict: its own flags
      without_flag.append(field.name)
      continue
    want = list(value) if isinstance(value, tuple) else value
    if field.name == 'experiment_name':  # derived from the settings when not given
      assert flags.FLAGS[field.name].default is None
      continue
    assert flags.FLAGS[field.name].default == want, field.name
  # Settings set through flags of their own shape (generated per task, optimiser, aggregator,
  # algorithm or section), or not settable from the command line.
  assert sorted(without_flag) == sorted([
      'task_options', 'client_optimizer_hparams', 'server_optimizer_hparams',
      'algorithm_hparams', 'client_lr_schedule', 'server_lr_schedule', 'aggregation',
      'asynchrony', 'plugins', 'model_aggregator'])
