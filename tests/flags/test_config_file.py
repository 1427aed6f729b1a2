"""Config files (`--config`): one namespace with the flags, overrides, a run's own config.py."""

import dataclasses
import glob
import os
import sys

from absl import flags
import pytest

from tff_lab import cli
from tff_lab.flags import config_file
from tff_lab.training import config as config_lib
from tff_lab.training import experiment_dir

_CONFIGS = os.path.join(os.path.dirname(__file__), '..', '..', 'experiments', 'configs')


@pytest.fixture
def run_flags(monkeypatch):
  """Parses argv as tff-lab-run does (config_flags reads its overrides from sys.argv)."""
  def _parse(*argv):
    argv = ['tff-lab-run', *argv]
    monkeypatch.setattr(sys, 'argv', argv)
    flags.FLAGS.unparse_flags()
    cli.parse_flags(argv)
    return cli.config_from_flags()
  yield _parse
  flags.FLAGS.unparse_flags()


def _write(tmp_path, body: str) -> str:
  path = tmp_path / 'settings.py'
  path.write_text('import ml_collections\n\n\ndef get_config():\n'
                  '  config = ml_collections.ConfigDict()\n'
                  + ''.join(f'  {line}\n' for line in body.strip().splitlines())
                  + '  return config\n')
  return str(path)


def test_a_config_file_sets_flags_by_name_and_the_command_line_overrides_it(tmp_path, run_flags):
  path = _write(tmp_path, """
config.task = 'synthetic'
config.synthetic_alpha = 0.5
config.algorithm = 'fedprox'
config.mu = 1.0
config.rounds = 40
config.clip_norm = 2.0
config.client_optimizer = 'sgdm'
config.client_sgdm_momentum = 0.5
""")
  config = run_flags(f'--config={path}')
  assert (config.task, config.algorithm, config.rounds) == ('synthetic', 'fedprox', 40)
  assert config.task_options['alpha'] == 0.5
  assert config.algorithm_hparams == {'mu': 1.0}
  assert config.aggregation == {'clip_norm': 2.0}
  assert config.client_optimizer_hparams == {'momentum': 0.5}
  config.validate()
  assert run_flags(f'--config={path}', '--config.rounds=7').rounds == 7
  overridden = run_flags(f'--config={path}', '--rounds=9', '--mu=0.25')
  assert (overridden.rounds, overridden.algorithm_hparams) == (9, {'mu': 0.25})
  assert run_flags().rounds == config_lib.ExperimentConfig().rounds  # nothing left behind


@pytest.mark.parametrize('body, message', [
    ('config.roundz = 3', r"unknown setting\(s\) \['roundz'\] \(roundz: did you mean rounds\?\)"),
    ('config.aggregation = {"clip_norm": 1.0}', r"unknown setting\(s\) \['aggregation'\]"),
    ('config.rounds = "ten"', r"rounds='ten' is not a valid --rounds"),
    ('config.clip_norm = "big"', r"clip_norm='big' is not a valid --clip_norm"),
])
def test_a_bad_config_file_is_one_line(tmp_path, run_flags, body, message):
  path = _write(tmp_path, body)
  with pytest.raises(config_lib.ConfigError, match=message) as raised:
    run_flags(f'--config={path}')
  assert '\n' not in str(raised.value) and path in str(raised.value)


def test_an_override_the_file_lacks_or_a_broken_file_is_one_line_exit_2(tmp_path, run_flags,
                                                                          capsys):
  path = _write(tmp_path, 'config.rounds = 3')
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config():\n  raise ValueError("no such cell")\n')
  for argv, message in (([f'--config={path}', '--config.roundz=4'], 'has no setting'),
                        ([f'--config={broken}'], 'ValueError: no such cell')):
    with pytest.raises(SystemExit) as exited:
      run_flags(*argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and message in err and '\n' not in err, err


def test_a_runs_config_py_gives_back_its_settings(tmp_path, run_flags):
  config = config_lib.ExperimentConfig(
      task='digits', task_options={'alpha': 0.1, 'model': 'mlp'}, algorithm='fedprox',
      algorithm_hparams={'mu': 0.5}, server_optimizer='adam', server_learning_rate=0.01,
      server_optimizer_hparams={'beta_1': 0.8}, client_lr_schedule={'schedule': 'step'},
      aggregation={'aggregator': 'trimmed_mean', 'trim_fraction': 0.2},
      asynchrony={'latency_sigma': 0.3}, rounds=12, straggler_fraction=0.2, seed=3,
      client_max_elements=50, root_output_dir=str(tmp_path), experiment_name='a_run',
      progress=False)
  config.validate()
  exp_dir = experiment_dir.prepare_experiment_dir(config)
  saved = os.path.join(exp_dir, 'config.py')
  assert os.path.exists(saved)
  repeated = run_flags(f'--config={saved}', '--noprogress')
  expected = config.to_dict()
  got = repeated.to_dict()
  # The flags fill in every task option and optimiser hyperparameter, at the builder's default
  # where not given (as config.json holds them for a run started from flags).
  filled = ('task_options', 'client_optimizer_hparams', 'server_optimizer_hparams')
  for key in filled:
    assert {k: got[key][k] for k in expected[key]} == expected[key], key
  for key in expected:
    if key not in filled:
      assert got[key] == expected[key], key
  # A longer run rewrites config.py with config.json.
  experiment_dir.prepare_experiment_dir(dataclasses.replace(config, rounds=20))
  assert run_flags(f'--config={saved}').rounds == 20


@pytest.mark.parametrize('path', sorted(p for p in glob.glob(os.path.join(_CONFIGS, '*.py'))
                                         if not os.path.basename(p).startswith('tune_')))
def test_every_shipped_config_file_is_valid(path, run_flags):
  """Every tff-lab-run config file (tune_*.py are tff-lab-tune study files, tests/tuning)."""
  if path.endswith('reproductions.py'):
    from tff_lab import baselines  # pylint: disable=g-import-not-at-top
    for paper in baselines.paper_names():
      run = baselines.get_paper(paper).runs(True, 1)[0]
      config = run_flags(f'--config={path}:{paper}/quick/{run.name}')
      config.validate()
      assert (config.experiment_name, config.rounds) == (run.name, run.config.rounds)
      given = run.config.task_options  # the flags add the task's other options at their defaults
      assert {k: config.task_options[k] for k in given} == given
    return
  run_flags(f'--config={path}').validate()


def test_flag_settings_name_every_setting_as_its_flag():
  settings = config_file.flag_settings(config_lib.ExperimentConfig(
      task_options={'alpha': 0.3}, aggregation={'aggregator': 'krum', 'krum_f': 1},
      plugins=('my.plugin',), workers=('h:1',)).to_dict())
  assert settings['digits_alpha'] == 0.3 and settings['krum_f'] == 1
  assert settings['plugin'] == ['my.plugin'] and settings['workers'] == ['h:1']
  names = {n for group in cli.section_flags.GROUPS.values() for n in group}
  assert set(settings) <= names, set(settings) - names
