"""The per-client report: evaluation, fine-tuning and local baselines against NumPy logistic
regression; the distribution and gain statistics; TFF's personalisation evaluation agrees."""

import collections
import csv
import dataclasses
import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab import cli
from tff_lab import tasks
from tff_lab.evaluation import personalization
from tff_lab.training import config as config_lib
from tff_lab.training import loop

LR, EPOCHS = 0.1, 2


@pytest.fixture(scope='module', name='task')
def fixture_task():
  # Unshuffled local training, so that NumPy can replay it batch by batch.
  return tasks.create_task('breast_cancer_silos', {'num_silos': 4}).with_train_spec(
      batch_size=16, shuffle_buffer_size=1)


def _arrays(data, client_id):
  batch = next(iter(data.create_tf_dataset_for_client(client_id).batch(10_000)))
  return batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64)


def _weights(seed):
  rng = np.random.default_rng(seed)
  return tff.learning.models.ModelWeights(
      trainable=[rng.normal(0, 0.3, (30, 1)).astype(np.float32),
                 rng.normal(0, 0.3, (1,)).astype(np.float32)], non_trainable=[])


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _numpy_eval(kernel, bias, x, y):
  p = _sigmoid(x @ kernel + bias)
  bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
  return np.mean((p > 0.5) == (y == 1)), bce


def _numpy_sgd(kernel, bias, x, y, epochs, batch_size, lr):
  kernel, bias = kernel.astype(np.float64).copy(), bias.astype(np.float64).copy()
  xs, ys = np.concatenate([x] * epochs), np.concatenate([y] * epochs)  # repeat, then batch
  for start in range(0, len(ys), batch_size):
    xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
    err = _sigmoid(xb @ kernel + bias) - yb  # ∇ of the mean binary cross-entropy
    kernel -= lr * xb.T @ err / len(yb)
    bias -= lr * err.sum(axis=0) / len(yb)
  return kernel, bias


def test_evaluate_each_matches_numpy_for_one_and_per_client_models(task):
  ids = list(task.test_data.client_ids)
  w = _weights(0)
  shared = personalization.evaluate_each(task, w, ids)
  own_weights = [_weights(i + 1) for i in range(len(ids))]
  own = personalization.evaluate_each(task, own_weights, ids, per_client_weights=True)
  for i, cid in enumerate(ids):
    x, y = _arrays(task.test_data, cid)
    for result, weights in ((shared[i], w), (own[i], own_weights[i])):
      accuracy, loss = _numpy_eval(*weights.trainable, x, y)
      assert result['accuracy'] == pytest.approx(accuracy)
      assert result['loss'] == pytest.approx(loss, rel=1e-4)
      assert result['num_examples'] == len(y)


def test_train_locally_is_sgd_on_the_clients_training_split(task):
  ids = list(task.test_data.client_ids)
  w = _weights(3)
  results = personalization.train_locally(task, w, ids, EPOCHS, LR)
  for cid, result in zip(ids, results):
    kernel, bias = _numpy_sgd(*w.trainable, *_arrays(task.train_data, cid), EPOCHS, 16, LR)
    accuracy, loss = _numpy_eval(kernel, bias, *_arrays(task.test_data, cid))
    assert result['accuracy'] == pytest.approx(accuracy)
    assert result['loss'] == pytest.approx(loss, rel=1e-4)


def test_finetuning_agrees_with_tffs_personalization_eval_computation(task):
  """TFF's own computation (reservoir-sampled, unordered) gives the same per-client accuracies."""
  ids = list(task.test_data.client_ids)
  w = _weights(4)
  ours = personalization.build_finetune_evaluation(task, LR)(
      w, personalization.local_training_inputs(task, ids, EPOCHS, seed=0))

  def finetune_fn():
    @tf.function
    def finetune(model, train_data, test_data):
      trainable = model.trainable_variables
      for batch in task.with_train_spec(num_epochs=EPOCHS).preprocess_train(train_data):
        with tf.GradientTape() as tape:
          loss = model.forward_pass(batch, training=True).loss
        for var, g in zip(trainable, tape.gradient(loss, trainable)):
          var.assign_sub(LR * g)
      return _accuracy(model, test_data)
    return finetune

  def _accuracy(model, data):
    correct, count = tf.constant(0.0), tf.constant(0.0)
    for batch in data.batch(128):
      p = model.forward_pass(batch, training=False).predictions
      correct += tf.reduce_sum(tf.cast(tf.equal(tf.cast(p > 0.5, tf.float32), batch['y']),
                                       tf.float32))
      count += tf.cast(tf.shape(batch['y'])[0], tf.float32)
    return collections.OrderedDict(accuracy=correct / count)

  computation = tff.learning.algorithms.build_personalization_eval_computation(
      task.tff_model_fn, collections.OrderedDict(finetuned=finetune_fn),
      tf.function(_accuracy), max_num_clients=len(ids))
  theirs = computation(w, [collections.OrderedDict(
      train_data=task.train_data.create_tf_dataset_for_client(c),
      test_data=task.test_data.create_tf_dataset_for_client(c)) for c in ids])
  acc = lambda sums: float(sums['correct']) / float(sums['num_predictions'])
  np.testing.assert_allclose(sorted(acc(r['after']) for r in ours),
                             sorted(theirs['finetuned']['accuracy']), atol=1e-6)
  np.testing.assert_allclose(sorted(acc(r['before']) for r in ours),
                             sorted(theirs['baseline_metrics']['accuracy']), atol=1e-6)
  assert len(set(acc(r['after']) for r in ours)) > 1  # the clients differ: the pairing matters


def test_distribution_and_gain():
  acc = [0.9, 0.5, 0.7, 1.0, 0.6]
  d = personalization.distribution(acc)
  assert d['accuracy_mean'] == pytest.approx(0.74)
  assert d['accuracy_var'] == pytest.approx(np.mean((np.array(acc) - 0.74) ** 2))
  assert d['accuracy_p50'] == pytest.approx(0.7)
  # Linear interpolation between order statistics: rank 0.4 of 4 -> 0.5 + 0.4·(0.6 − 0.5).
  assert d['accuracy_p10'] == pytest.approx(0.54)
  assert d['accuracy_p90'] == pytest.approx(0.96)
  assert d['accuracy_worst'] == 0.5 and d['num_clients'] == 5
  g = personalization.gain(acc, [0.8, 0.5, 0.9, 0.9, 0.5])
  assert g['gain_fraction'] == pytest.approx(3 / 5)  # a tie is not a gain
  assert g['gain_mean'] == pytest.approx(np.mean([0.1, 0.0, -0.2, 0.1, 0.1]))


def test_report_metrics_and_rows():
  row = lambda a: collections.OrderedDict(accuracy=a, loss=1 - a, num_examples=10)
  results = collections.OrderedDict([('global', [row(0.5), row(0.9)]),
                                     ('personal', [row(0.8), row(0.6)])])
  baseline = [row(0.7), row(0.7)]
  m = personalization.report_metrics(results, baseline)
  assert m['fed_eval_global_gain_fraction'] == 0.5 and m['fed_eval_personal_gain_fraction'] == 0.5
  assert m['fed_eval_personal_accuracy_worst'] == 0.6 and m['fed_eval_local_accuracy_mean'] == 0.7
  assert 'fed_eval_local_gain_fraction' not in m
  rows = personalization.client_rows(['a', 'b'], [30, 3], results, baseline)
  assert rows[1]['personal_gain'] == pytest.approx(-0.1) and rows[0]['num_train'] == 30
  assert list(rows[0])[:3] == ['client', 'num_train', 'num_test']


def test_client_report_caches_its_baseline_and_writes_its_files(task, tmp_path, monkeypatch):
  initial = _weights(5)
  report = personalization.ClientReport(task, initial, LR, seed=0, finetune_epochs=1,
                                        local_baseline_epochs=EPOCHS, personalized=True)
  calls = []
  real = personalization.train_locally
  monkeypatch.setattr(personalization, 'train_locally',
                      lambda *a, **k: calls.append(a[3]) or real(*a, **k))
  own = lambda g, cid: _weights(7) if cid == report.client_ids[0] else g
  first = report.evaluate(_weights(6), own)
  second = report.evaluate(_weights(8), own)
  assert calls == [1, EPOCHS, 1]  # fine-tuning every time, the local baseline once
  for m in (first, second):
    for model in ('global', 'personal', 'finetuned', 'local'):
      assert m[f'fed_eval_{model}_num_clients'] == len(report.client_ids)
  assert first['fed_eval_local_accuracy_mean'] == second['fed_eval_local_accuracy_mean']
  saved = report.to_checkpoint()
  again = personalization.ClientReport(task, initial, LR, seed=0, local_baseline_epochs=EPOCHS)
  again.restore(saved)
  assert again.baseline == report.baseline
  assert set(report.write_final(str(tmp_path))) == {'clients.csv', 'client_accuracy.png'}
  assert os.path.getsize(tmp_path / 'client_accuracy.png') > 1000
  with open(tmp_path / 'clients.csv') as f:
    lines = f.read().splitlines()
  assert len(lines) == 1 + len(report.client_ids) and 'personal_gain' in lines[0]


def test_local_training_of_clients_without_training_data_is_refused_in_one_line():
  task = tasks.create_task('seed_linear', {'num_clients': 4})
  task = dataclasses.replace(task, test_data=tff.simulation.datasets.TestClientData(
      {'stranger': collections.OrderedDict(x=np.zeros((2, 2), np.float32),
                                           y=np.zeros((2, 1), np.float32))}))
  with pytest.raises(ValueError,
                     match="--finetune_epochs trains each evaluation client.*'stranger'"):
    personalization.check_task(task, finetune_epochs=1)
  personalization.check_task(task)  # nothing asked, nothing to check
  with pytest.raises(ValueError, match='epochs must be an integer >= 1'):
    personalization.train_locally(task, None, [], 0, 0.1)


def _config(tmp_path, name, rounds, **kwargs):
  settings = dict(
      task='digits', task_options={'num_clients': 6, 'model': 'mlp'}, algorithm='ditto',
      algorithm_hparams={'ditto_lambda': 0.5}, rounds=rounds, clients_per_round=3,
      eval_every=2, checkpoint_every=2, finetune_epochs=1, local_baseline_epochs=2,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False)
  settings.update(kwargs)
  return config_lib.ExperimentConfig(**settings)


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_the_loop_reports_every_model_and_resumes_with_its_cached_baseline(tmp_path,
                                                                          monkeypatch):
  calls = []
  real = personalization.train_locally
  monkeypatch.setattr(personalization, 'train_locally',
                      lambda *a, **k: calls.append(a[3]) or real(*a, **k))
  summary = loop.run_experiment(_config(tmp_path, 'straight', 3))
  assert calls == [1, 2, 1]  # fine-tuning at rounds 2 and 3, the local baseline once
  calls.clear()
  loop.run_experiment(_config(tmp_path, 'resumed', 2))  # evaluates at round 2; checkpoint 2
  loop.run_experiment(_config(tmp_path, 'resumed', 3))  # resumes from 2, evaluates at 3
  # Round 2: fine-tuning and the baseline; round 3 after resuming: fine-tuning only, the
  # baseline coming from checkpoint 2.
  assert calls == [1, 2, 1]
  straight = _rows(tmp_path / 'straight' / 'metrics.csv')
  resumed = _rows(tmp_path / 'resumed' / 'metrics.csv')
  report = [k for k in straight[-1] if k.startswith(('fed_eval_global_', 'fed_eval_personal_',
                                                     'fed_eval_finetuned_', 'fed_eval_local_'))]
  assert {f'fed_eval_{m}_accuracy_{s}' for m in ('global', 'personal', 'finetuned', 'local')
          for s in ('mean', 'var', 'p10', 'p50', 'p90', 'worst')} <= set(report)
  assert {'fed_eval_personal_gain_fraction', 'fed_eval_finetuned_gain_fraction'} <= set(report)
  assert [straight[-1][k] for k in report] == [resumed[-1][k] for k in report]
  assert straight[1]['fed_eval_local_accuracy_mean'] == straight[2]['fed_eval_local_accuracy_mean']
  # The global model's distribution is the federated evaluation's, from exact values.
  last = straight[-1]
  assert float(last['fed_eval_global_accuracy_mean']) == pytest.approx(
      float(last['fed_eval_client_accuracy_mean']), abs=1e-6)
  assert float(last['fed_eval_global_accuracy_p10']) == pytest.approx(
      float(last['fed_eval_client_accuracy_p10']), abs=2e-3)
  clients = _rows(tmp_path / 'straight' / 'clients.csv')
  assert len(clients) == 6 and {'personal_accuracy', 'finetuned_gain'} <= set(clients[0])
  assert np.mean([float(r['global_accuracy']) for r in clients]) == pytest.approx(
      float(last['fed_eval_global_accuracy_mean']))
  assert {'clients.csv', 'client_accuracy.png'} <= set(summary['files'])
  assert (tmp_path / 'straight' / 'client_accuracy.png').stat().st_size > 1000


@pytest.mark.parametrize('settings, message', [
    ({'finetune_epochs': -1}, 'finetune_epochs must be an integer >= 0'),
    ({'local_baseline_epochs': 1.5}, 'local_baseline_epochs must be an integer >= 0'),
    ({'local_baseline_epochs': True}, 'local_baseline_epochs must be an integer >= 0'),
    ({'finetune_epochs': 2, 'eval_every': 0}, 'finetune_epochs=2 is part of evaluation'),
])
def test_bad_report_settings_are_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as info:
    loop.run_experiment(_config(tmp_path, 'bad', 2, **settings))
  assert '\n' not in str(info.value)
  assert not (tmp_path / 'bad').exists()


def test_local_training_without_training_splits_is_refused_before_tracing(tmp_path,
                                                                         monkeypatch):
  task = tasks.create_task('digits', {'num_clients': 6, 'model': 'mlp'})
  stranger = dataclasses.replace(task, test_data=tff.simulation.datasets.TestClientData(
      {'stranger': collections.OrderedDict(x=np.zeros((2, 8, 8, 1), np.float32),
                                           y=np.zeros((2,), np.int64))}))
  monkeypatch.setattr(loop, 'build_task', lambda config: stranger)
  monkeypatch.setattr(loop, 'build_process', lambda *a, **k: pytest.fail('traced'))
  with pytest.raises(config_lib.ConfigError, match='--finetune_epochs trains each evaluation'):
    loop.run_experiment(_config(tmp_path, 'bad', 2))


def test_cli_flags_reach_the_config_and_bad_values_exit_2(monkeypatch, capsys, tmp_path):
  monkeypatch.setattr(loop, 'build_process', lambda *a, **k: pytest.fail('traced'))
  try:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['run_experiment', '--finetune_epochs=3', '--local_baseline_epochs=4'])
    config = cli.config_from_flags()
    assert (config.finetune_epochs, config.local_baseline_epochs) == (3, 4)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['run_experiment', f'--root_output_dir={tmp_path}', '--noprogress',
                 '--local_baseline_epochs=-2'])
    with pytest.raises(SystemExit) as exc:
      cli._main(['run_experiment'])  # pylint: disable=protected-access
  finally:
    flags.FLAGS.unparse_flags()
  err = capsys.readouterr().err
  assert exc.value.code == 2 and err.count('\n') == 1
  assert 'local_baseline_epochs must be an integer >= 0' in err


def test_under_dp_with_withheld_metrics_no_per_client_value_is_written(tmp_path):
  dp_metrics, written = 'withheld', False
  summary = loop.run_experiment(config_lib.ExperimentConfig(
      task='seed_linear', algorithm='fedavg_unweighted', rounds=1, clients_per_round=4,
      eval_every=1, dp_delta=1e-3, dp_metrics=dp_metrics,
      aggregation={'dp': 'fixed', 'clip_norm': 0.5, 'noise_multiplier': 1.2},
      root_output_dir=str(tmp_path), experiment_name='dp', progress=False))
  assert (tmp_path / 'dp' / 'clients.csv').exists() == written
  assert ('clients.csv' in summary['files']) == written
  last = _rows(tmp_path / 'dp' / 'metrics.csv')[-1]
  assert bool(last.get('fed_eval_global_accuracy_p50')) == written
