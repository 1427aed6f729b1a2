"""The typed sections of ExperimentConfig: one declaration per setting, each section checks itself."""

import dataclasses
import os
import subprocess
import sys

from absl import flags
import pytest

from tff_lab import cli
from tff_lab import faults as faults_lib
from tff_lab.flags import section_flags
from tff_lab.training import config as config_lib
from tff_lab.training import sections


def test_the_config_is_exactly_its_sections_fields():
  names = [f.name for _, section in sections.SECTIONS for f in dataclasses.fields(section)]
  assert len(names) == len(set(names)), 'a setting declared in two sections'
  assert sorted(names) == sorted(f.name for f in dataclasses.fields(config_lib.ExperimentConfig))


def test_every_setting_has_help_and_listed_choices_are_valid_defaults():
  for _, section in sections.SECTIONS:
    for field in dataclasses.fields(section):
      assert field.metadata.get('help'), f'{section.__name__}.{field.name} has no help'
      choices = sections.choices_of(field)
      if choices:
        assert field.default in choices, field.name


@pytest.mark.parametrize('section, settings, check_args, message', [
    (sections.TaskSection, {'task': 'nope'}, (), "unknown task 'nope'"),
    (sections.TaskSection, {'task_options': {'colour': 1}}, (), "task 'digits' has no option"),
    (sections.AlgorithmSection, {'algorithm': 'fedmagic'}, (), 'fedmagic'),
    (sections.AlgorithmSection, {'server_optimizer': 'lion'}, (), "unknown server optimizer"),
    (sections.AlgorithmSection, {'client_learning_rate': 0.0}, (), 'client_learning_rate must be '
     'positive'),
    (sections.AlgorithmSection, {'algorithm': 'fedprox', 'algorithm_hparams': {'mu': -1.0}}, (),
     'mu'),
    (sections.TrainingSection, {'seed': -1}, (), r'seed must be an integer in \[0, 2\*\*32 - 1\]'),
    (sections.TrainingSection, {'client_sampling': 'stratified'}, (),
     "unknown client_sampling 'stratified'; choose one of"),
    (sections.EvaluationSection, {'eval_every': 0, 'finetune_epochs': 2}, (),
     'finetune_epochs=2 is part of evaluation'),
    (sections.FaultSection, {'dropout_fraction': 1.5}, (10,), r'dropout_fraction must be in \[0, 1\)'),
    (sections.FaultSection, {'byzantine_fraction': 0.5, 'dropout_fraction': 0.5}, (10,),
     'leave no honest client'),
    (sections.AggregationSection, {'aggregation': {'bits_per_thing': 3}}, (10, 0),
     'unknown aggregation setting'),
    (sections.AggregationSection, {'dp_delta': 0.01}, (10, 0), '--dp_delta only applies with'),
    (sections.SimulationSection, {'simulation': 'gpu'}, (), "unknown simulation 'gpu'"),
    (sections.SimulationSection, {'workers': ('nohostport',)}, (), 'nohostport'),
    (sections.OutputSection, {'experiment_name': 'a/b'}, (), 'experiment_name must be'),
    (sections.OutputSection, {'checkpoint_every': 0}, (), 'checkpoint_every must be positive'),
])
def test_a_section_validates_itself(section, settings, check_args, message):
  name = next(n for n, s in sections.SECTIONS if s is section)
  check = getattr(section(**settings), f'check_{name}')
  getattr(section(), f'check_{name}')(*check_args)  # its defaults are valid on their own
  with pytest.raises(sections.ConfigError, match=message):
    check(*check_args)
  with pytest.raises(config_lib.ConfigError, match=message):  # and the whole config says the same
    config_lib.ExperimentConfig(**settings).validate()


def test_section_returns_one_section_of_a_config():
  config = config_lib.ExperimentConfig(attack='scale', dropout_fraction=0.2, rounds=7)
  faults = config.section(sections.FaultSection)
  assert type(faults) is sections.FaultSection
  assert (faults.attack, faults.dropout_fraction) == ('scale', 0.2)
  assert config.section(sections.TrainingSection).rounds == 7
  assert config.faults == faults.faults == faults_lib.FaultConfig(attack='scale',
                                                                  dropout_fraction=0.2)


def test_fault_section_defaults_are_the_fault_simulations():
  assert sections.FaultSection().faults == faults_lib.FaultConfig()


def test_every_run_flag_is_generated_into_a_help_group():
  """Each section's fields have their flag under the section's title, with the field's help."""
  grouped = {n for names in section_flags.GROUPS.values() for n in names}
  for title, section in sections.SECTIONS:
    for field in dataclasses.fields(section):
      flag = field.metadata.get('flag', field.name)
      if flag is None:
        continue
      assert flag in section_flags.GROUPS[title], (title, flag)
      assert flags.FLAGS[flag].help.startswith(field.metadata['help'][:30]), flag
  # The generated flags (task options, optimiser and algorithm hyperparameters, aggregation and
  # asynchronous settings) are in their section's group too.
  for flag in ('digits_model', 'client_sgdm_momentum', 'mu', 'clip_norm', 'buffer_size', 'plugin',
               'client_lr_schedule'):
    assert flag in grouped, flag


def test_help_lists_the_flags_by_section_with_choices():
  text = cli.help_text('tff-lab-run')
  titles = [t for t, _ in sections.SECTIONS]
  positions = [text.index(f'\n{title}:\n') for title in titles]
  assert positions == sorted(positions)
  assert '--attack: ' in text and 'One of: sign_flip, scale, gaussian, label_flip' in text
  assert 'Task digits: `mlp` (the 2NN)' in text  # a task option's help is its docstring's
  assert '--tpu' not in text and '--xla' not in text  # not absl's or TensorFlow's


def test_help_flag_prints_the_groups_and_exits_zero():
  binary = os.path.join(os.path.dirname(__file__), '..', '..', 'experiments', 'run_experiment.py')
  result = subprocess.run([sys.executable, binary, '--help'], capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '\nfaults:\n  --byzantine_fraction' in result.stdout
