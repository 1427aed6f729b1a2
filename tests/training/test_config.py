"""ExperimentConfig validation and experiment directories."""

import json

import pytest

from tff_lab.training import config as config_lib


def _config(tmp_path, **kw):
  return config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='e', **kw)


@pytest.mark.parametrize('kw, match', [
    ({'task': 'x'}, "unknown task 'x'"),
    ({'algorithm': 'no_such_algorithm'}, "unknown algorithm 'no_such_algorithm'"),
    ({'client_optimizer': 'lamb'}, "unknown client optimizer 'lamb'"),
    ({'server_optimizer_hparams': {'momentum': 0.9}}, r"no hyperparameter\(s\) \['momentum'\]"),
    ({'task_options': {'nope': 1}}, r"no option\(s\) \['nope'\]"),
    ({'rounds': 0}, 'rounds must be positive'),
    ({'clients_per_round': -1}, 'clients_per_round must be positive'),
    ({'checkpoint_every': 0}, 'checkpoint_every must be positive'),
    ({'client_max_elements': 0}, 'client_max_elements must be positive'),
    ({'algorithm': 'fedprox', 'algorithm_hparams': {'mu': -1.0}}, 'mu must be >= 0'),
    ({'algorithm': 'fedprox', 'algorithm_hparams': {'mu': 'big'}}, 'mu must be a finite number'),
    ({'algorithm': 'fedprox', 'algorithm_hparams': {'nu': 1.0}}, r"has no hyperparameter\(s\) \['nu'\]"),
    ({'algorithm': 'fedavg', 'algorithm_hparams': {'mu': 1.0}}, 'mu only applies to --algorithm=fedprox'),
    ({'algorithm_hparams': ['mu']}, 'algorithm_hparams must be a dict'),
    ({'experiment_name': ''}, 'experiment_name'),
])
def test_invalid_settings(tmp_path, kw, match):
  cfg = _config(tmp_path, **kw) if 'experiment_name' not in kw else (
      config_lib.ExperimentConfig(root_output_dir=str(tmp_path), **kw))
  with pytest.raises(config_lib.ConfigError, match=match):
    cfg.validate()


def test_valid_default_and_client_count(tmp_path):
  cfg = _config(tmp_path, clients_per_round=5)
  cfg.validate()
  cfg.validate_against_task(5, 'sparse_categorical')
  with pytest.raises(config_lib.ConfigError, match='exceeds the 4 training clients'):
    cfg.validate_against_task(4, 'sparse_categorical')
  flipping = _config(tmp_path, byzantine_fraction=0.2, attack='label_flip')
  flipping.validate_against_task(10, 'sign')
  with pytest.raises(config_lib.ConfigError, match='label_flip is defined for'):
    flipping.validate_against_task(10, 'next_token')


def test_resume_allows_only_resumable_changes(tmp_path):
  config_lib.prepare_experiment_dir(_config(tmp_path, rounds=10))
  config_lib.prepare_experiment_dir(_config(tmp_path, rounds=20, progress=False))  # extend: ok
  saved = json.loads((tmp_path / 'e' / 'config.json').read_text())
  assert saved['rounds'] == 20
  with pytest.raises(config_lib.ConfigError, match='seed: saved 0, given 1'):
    config_lib.prepare_experiment_dir(_config(tmp_path, seed=1))
  (tmp_path / 'e' / 'keep.txt').write_text('x')
  config_lib.prepare_experiment_dir(_config(tmp_path, seed=1, overwrite=True))
  assert not (tmp_path / 'e' / 'keep.txt').exists()


def test_plugins_are_recorded_and_resuming_with_others_is_refused(tmp_path, monkeypatch):
  (tmp_path / 't_cfg_plugin.py').write_text('LOADED = True\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  with_plugin = _config(tmp_path, task='seed_linear', plugins=('t_cfg_plugin',))
  with_plugin.validate()  # imports it
  config_lib.prepare_experiment_dir(with_plugin)
  assert json.loads((tmp_path / 'e' / 'config.json').read_text())['plugins'] == ['t_cfg_plugin']
  with pytest.raises(config_lib.ConfigError) as error:
    _config(tmp_path, task='seed_linear').validate()
  message = str(error.value)
  assert '\n' not in message and "plugins: saved ['t_cfg_plugin'], given []" in message
  assert 're-run with --plugin=t_cfg_plugin' in message
  with pytest.raises(config_lib.ConfigError, match=r"plugins: saved \['t_cfg_plugin'\], given"):
    config_lib.prepare_experiment_dir(_config(tmp_path, task='seed_linear'))
  _config(tmp_path, task='seed_linear', overwrite=True).validate()  # starting over is allowed


def test_a_config_json_from_before_plugins_resumes(tmp_path):
  config_lib.prepare_experiment_dir(_config(tmp_path))
  path = tmp_path / 'e' / 'config.json'
  saved = json.loads(path.read_text())
  del saved['plugins']
  path.write_text(json.dumps(saved))
  _config(tmp_path).validate()
  config_lib.prepare_experiment_dir(_config(tmp_path))


@pytest.mark.parametrize('algorithm, old_mu, hparams', [
    ('fedavg', 0.0, {}), ('fedprox', 0.0, {}), ('fedprox', 0.0, {'mu': 0.0}),
    ('fedprox', 1.5, {'mu': 1.5})])
def test_a_config_json_with_the_old_mu_setting_resumes(tmp_path, algorithm, old_mu, hparams):
  config_lib.prepare_experiment_dir(_config(tmp_path, algorithm=algorithm,
                                            algorithm_hparams=hparams))
  path = tmp_path / 'e' / 'config.json'
  saved = json.loads(path.read_text())
  del saved['algorithm_hparams']  # as written before algorithm_hparams replaced mu
  saved['mu'] = old_mu
  path.write_text(json.dumps(saved))
  config_lib.prepare_experiment_dir(_config(tmp_path, algorithm=algorithm,
                                            algorithm_hparams=hparams))
  with pytest.raises(config_lib.ConfigError, match='algorithm_hparams: saved'):
    config_lib.prepare_experiment_dir(_config(tmp_path, algorithm='fedprox',
                                              algorithm_hparams={'mu': 2.5}))


def test_a_config_json_from_before_newer_settings_resumes_with_their_defaults(tmp_path):
  config_lib.prepare_experiment_dir(_config(tmp_path))
  path = tmp_path / 'e' / 'config.json'
  saved = json.loads(path.read_text())
  for key in ('client_lr_schedule', 'server_lr_schedule', 'asynchrony', 'model_aggregator',
              'finetune_epochs', 'algorithm_hparams', 'plugins'):
    del saved[key]
  path.write_text(json.dumps(saved))
  config_lib.prepare_experiment_dir(_config(tmp_path))  # the defaults are what it ran with
  with pytest.raises(config_lib.ConfigError, match='client_lr_schedule: saved'):
    config_lib.prepare_experiment_dir(_config(tmp_path, client_lr_schedule={'schedule': 'step'}))


def test_a_plugin_that_does_not_import_is_a_config_error(tmp_path):
  with pytest.raises(config_lib.ConfigError,
                     match='^--plugin=t_no_such_plugin: cannot import t_no_such_plugin'):
    _config(tmp_path, plugins=('t_no_such_plugin',)).validate()


def test_a_registered_aggregator_must_suit_the_algorithm(tmp_path):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tff_lab import aggregators  # pylint: disable=g-import-not-at-top
  from tff_lab.aggregators import registry  # pylint: disable=g-import-not-at-top
  aggregators.register('t_cfg_unweighted', lambda weighted: tff.aggregators.UnweightedMeanFactory())
  try:
    agg = {'aggregator': 't_cfg_unweighted'}
    _config(tmp_path, algorithm='fedavg_unweighted', aggregation=agg).validate()
    for kw in ({'algorithm': 'fedavg'},  # weighted
               {'algorithm': 'fedavg_unweighted', 'byzantine_fraction': 0.2}):  # update attacks
      with pytest.raises(config_lib.ConfigError, match="aggregator 't_cfg_unweighted' returned a "
                         'UnweightedMeanFactory for weighted=True'):
        _config(tmp_path, aggregation=agg, **kw).validate()
    with pytest.raises(config_lib.ConfigError, match='--algorithm=scaffold aggregates with its own'):
      _config(tmp_path, algorithm='scaffold', aggregation=agg).validate()
    with pytest.raises(config_lib.ConfigError,
                       match='--simulation=fused does not run registered aggregators'):
      _config(tmp_path, algorithm='fedavg_unweighted', aggregation=agg,
              simulation='fused').validate()
  finally:
    del registry._BUILDERS['t_cfg_unweighted']  # pylint: disable=protected-access
