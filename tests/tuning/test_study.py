"""tff-lab-tune (tff_lab/tuning): the search finds FedSGD's fastest rate, computed from the data.

On `seed_linear` with the linear model, Keras' MSE is L(θ) = (1/n) Σ (θᵀx - y)², so its Hessian is
H = (2/n) XᵀX over the training examples. FedSGD with every client, full batch, and server SGD at
rate α is gradient descent on L: the error contracts by ρ(α) = max_i |1 - α λ_i| per round, best
at α* = 2/(λ_min + λ_max) with ρ* = (κ - 1)/(κ + 1), and diverges above 2/λ_max. The test's interval
is the rates that converge at least half as fast as α* (log ρ(α) <= ½ log ρ*, i.e. ρ(α) <= √ρ*):
[(1 - √ρ*)/λ_min, (1 + √ρ*)/λ_max].
"""

import csv
import json
import math
import os

import ml_collections
import numpy as np
import pytest

from tff_lab.tasks import registry as tasks_registry
from tff_lab.tuning import cli
from tff_lab.tuning import study as study_lib

ROUNDS = 5  # 4 gradient steps: the fast rates' excess loss stays above float32 resolution


def _base(**overrides):
  base = dict(task='seed_linear', algorithm='fedsgd', rounds=ROUNDS, clients_per_round=10,
              client_batch_size=1000, eval_every=0, progress=False, checkpoint_every=1000)
  base.update(overrides)
  return base


def _study_config(space, metric='train_loss', **base):
  return ml_collections.ConfigDict(dict(base=_base(**base), space=space, metric=metric))


def _fastest_interval():
  """The rates within a factor 2 (in rounds) of FedSGD's fastest, from the training data."""
  task = tasks_registry.create_task('seed_linear')
  x = np.stack([np.asarray(e['x'], np.float64)
                for cid in task.train_data.client_ids
                for e in task.train_data.create_tf_dataset_for_client(cid).as_numpy_iterator()])
  assert x.shape[1] == 2
  examples_per_client = len(x) / len(task.train_data.client_ids)
  assert _base()['client_batch_size'] >= examples_per_client  # full batch: one gradient step
  hessian = 2.0 / len(x) * x.T @ x
  lam_min, lam_max = np.linalg.eigvalsh(hessian)
  rho_star = (lam_max - lam_min) / (lam_max + lam_min)
  return ((1 - math.sqrt(rho_star)) / lam_min, (1 + math.sqrt(rho_star)) / lam_max,
          2.0 / (lam_min + lam_max), 2.0 / lam_max)


def test_tpe_finds_a_rate_where_fedsgd_converges_fastest(tmp_path):
  low, high, best, diverges = _fastest_interval()
  # The search range holds slow rates, the fastest ones, slower ones and diverging ones.
  assert 0.1 < low < best < high < diverges < 1.0
  space = dict(server_learning_rate=dict(type='log_uniform', low=0.1, high=1.0))
  result = study_lib.run_study(_study_config(space), str(tmp_path / 'study'), n_trials=6,
                               sampler='tpe', seed=0, n_startup_trials=2)
  rate = result.best_params['server_learning_rate']
  assert low <= rate <= high, (rate, (low, high))
  # Outputs: the best config is a tff-lab-run config file of the best trial's settings.
  files = result.files
  settings = study_lib.load_config_file(files['best_config']).to_dict()
  assert settings['server_learning_rate'] == pytest.approx(rate)
  assert settings['algorithm'] == 'fedsgd' and 'experiment_name' not in settings
  with open(files['trials']) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6 and all(r['state'] == 'COMPLETE' for r in rows)
  assert min(float(r['value']) for r in rows) == pytest.approx(result.best_value)
  for row in rows:  # every trial is an ordinary experiment directory
    assert os.path.exists(os.path.join(row['experiment_dir'], 'metrics.csv'))
    assert int(row['rounds_run']) == ROUNDS
  for name in ('history', 'importances'):
    with open(files[name], 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert os.path.exists(tmp_path / 'study' / 'study.db')


def test_pruning_reports_each_round_and_a_rerun_resumes(tmp_path, capsys):
  """Median pruning stops a slow rate at its first report; the same command resumes the study
  (`--n_trials` is its total); a changed space is refused with the difference."""
  study_file = tmp_path / 'tune_seed_linear.py'
  study_file.write_text(
      'import ml_collections\n\n\ndef get_config():\n'
      '  return ml_collections.ConfigDict(dict(\n'
      f'      base={_base(rounds=4)!r},\n'
      "      space=dict(server_learning_rate=dict(type='categorical', choices=[0.3, 0.003])),\n"
      "      metric='train_loss'))\n")
  study_dir = tmp_path / 'study'
  # Random search with seed 10 tries 0.3 and then 0.003 (Optuna's RandomSampler).
  argv = ['tff-lab-tune', f'--config={study_file}', f'--study_dir={study_dir}', '--sampler=random',
          '--seed=10', '--pruner=median', '--report_every=2', '--n_startup_trials=1',
          '--n_trials=2']
  assert cli.main(argv) == 0
  assert 'best: trial 0' in capsys.readouterr().out
  with open(study_dir / 'trials.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['state'], r['server_learning_rate'], r['rounds_run'], r['diverged'],
           r['interrupted']) for r in rows] == [
      ('COMPLETE', '0.3', '4', 'False', 'False'), ('PRUNED', '0.003', '2', 'False', 'False')]
  # The pruner saw every round's metric: the chunks resumed one experiment directory.
  import optuna  # pylint: disable=g-import-not-at-top
  storage = f'sqlite:///{study_dir}/study.db'
  complete, pruned = optuna.load_study(study_name='study', storage=storage).trials
  assert sorted(complete.intermediate_values) == [1, 2, 3, 4]
  assert sorted(pruned.intermediate_values) == [1, 2]
  assert pruned.intermediate_values[2] > complete.intermediate_values[2]
  with open(os.path.join(complete.user_attrs['experiment_dir'], 'metrics.csv')) as f:
    assert [int(r['round']) for r in csv.DictReader(f)] == [1, 2, 3, 4]
  # The same command again: the study has its 2 trials, so none runs; the outputs are rewritten.
  os.remove(study_dir / 'trials.csv')
  assert cli.main(argv) == 0
  assert len(optuna.load_study(study_name='study', storage=storage).trials) == 2
  assert os.path.exists(study_dir / 'trials.csv')
  # Another study definition in the same directory: refused, with the difference.
  capsys.readouterr()
  assert cli.main(argv + ['--config.metric=train_accuracy']) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert "metric: 'train_loss' -> 'train_accuracy'" in err, err
  assert len(os.listdir(study_dir / 'trials')) == 2


def test_a_metric_the_runs_do_not_write_stops_the_study_in_one_line(tmp_path):
  space = dict(server_learning_rate=dict(type='log_uniform', low=0.1, high=1.0))
  config = _study_config(space, metric='central_eval_accuracy', rounds=1)
  with pytest.raises(study_lib.TuneError) as e:
    study_lib.run_study(config, str(tmp_path / 'study'), n_trials=3)
  message = str(e.value)
  assert "metric 'central_eval_accuracy' is not in" in message and '\n' not in message
  assert 'eval_every > 0' in message and 'train_loss' in message  # its columns
  assert len(os.listdir(tmp_path / 'study' / 'trials')) == 1  # stopped after the first


def test_an_interrupted_trial_is_retried_in_its_own_directory():
  import optuna  # pylint: disable=g-import-not-at-top
  study = optuna.create_study()
  trial = study.ask()
  trial.suggest_float('server_learning_rate', 0.1, 1.0)
  trial.set_user_attr('experiment_name', 'trial_0000')
  trial.set_user_attr('interrupted', True)
  study.tell(trial, state=optuna.trial.TrialState.FAIL)
  for _ in range(2):  # a second call does not enqueue it twice
    study_lib._retry_in_own_directory(study, study.trials[0])  # pylint: disable=protected-access
  waiting = [t for t in study.trials if t.state.name == 'WAITING']
  assert len(waiting) == 1
  assert waiting[0].user_attrs == {'experiment_name': 'trial_0000', 'resumes_trial': 0}
  assert waiting[0].system_attrs['fixed_params'] == study.trials[0].params  # enqueued


@pytest.mark.parametrize('change, message', [
    (dict(space=dict(server_learning_rate=dict(type='log_uniform', low=1.0, high=0.1))),
     'empty range: low=1.0 >= high=0.1'),
    (dict(space=dict(client_epochs=dict(type='int', low=3, high=3))), 'empty range'),
    (dict(space=dict(server_learning_rate=dict(type='log_uniform', low=0.0, high=1.0))),
     'log scale needs low > 0'),
    (dict(space=dict(server_optimizer=dict(type='categorical', choices=[]))), 'non-empty list'),
    (dict(space=dict(server_learnig_rate=dict(type='uniform', low=0.1, high=1.0))),
     'space.server_learnig_rate is not a tff-lab-run setting (did you mean server_learning_rate?)'),
    (dict(space=dict(server_optimizer=dict(type='categorical', choices=['sgd', 'adamw']))),
     "space.server_optimizer='adamw'"),
    (dict(base=dict(rounds=0)), 'base: '),
    (dict(sampler='bayes'), "unknown sampler 'bayes'; the samplers are tpe, random, grid"),
    (dict(sampler='grid'), 'the grid sampler needs categorical parameters'),
    (dict(pruner='hyperband'), "unknown pruner 'hyperband'"),
    (dict(storage='nosuchdialect://host/db'), 'storage nosuchdialect://host/db cannot be opened'),
    (dict(storage='sqlite:////nonexistent_dir_for_tff_lab/study.db'), 'cannot be opened'),
])
def test_bad_input_is_one_line_before_any_trial(tmp_path, change, message):
  config = _study_config(change.pop('space', dict(
      server_learning_rate=dict(type='log_uniform', low=0.01, high=1.0))), **change.pop('base', {}))
  with pytest.raises(study_lib.TuneError) as e:
    study_lib.run_study(config, str(tmp_path / 'study'), n_trials=1, **change)
  assert message in str(e.value) and '\n' not in str(e.value), str(e.value)
  assert not os.path.exists(tmp_path / 'study' / 'trials')


def test_report_schedule_resumes_past_completed_rounds():
  assert study_lib.report_schedule(8, 0, pruning=False) == [8]
  assert study_lib.report_schedule(8, 0, pruning=True) == [2, 4, 6, 8]
  assert study_lib.report_schedule(7, 3, pruning=True) == [3, 6, 7]
  assert study_lib.report_schedule(8, 2, pruning=True, done=5) == [6, 8]


def test_definition_difference_names_each_changed_leaf():
  saved = dict(base=dict(rounds=4), space=dict(lr=dict(type='uniform', low=0.0, high=1.0)))
  wanted = json.loads(json.dumps(saved))
  wanted['space']['lr']['high'] = 2.0
  wanted['base']['seed'] = 3
  assert study_lib.definition_difference(saved, wanted) == [
      'base.seed: \'<absent>\' -> 3', 'space.lr.high: 1.0 -> 2.0']
