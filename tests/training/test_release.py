"""What a run releases under DP: every release counted, private metrics withheld, secret sampling."""

import csv
import json
import logging
import os
import stat
import types

import numpy as np
import pytest

from tff_lab.aggregators import dp
from tff_lab.privacy import accounting
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop
from tff_lab.training import release as release_lib

_DP = {'dp': 'fixed', 'clip_norm': 0.5, 'noise_multiplier': 1.2}
_DELTA = 1e-3


def _config(tmp_path, name='e', **kwargs):
  settings = dict(task='seed_linear', algorithm='fedavg_unweighted', rounds=3, clients_per_round=4,
                  eval_every=1, checkpoint_every=2, dp_delta=_DELTA, aggregation=dict(_DP),
                  root_output_dir=str(tmp_path), experiment_name=name, progress=False)
  settings.update(kwargs)
  return config_lib.ExperimentConfig(**settings)


def _rows(tmp_path, name='e'):
  with open(tmp_path / name / 'metrics.csv') as f:
    return list(csv.DictReader(f))


def _summary(tmp_path, name='e'):
  return json.loads((tmp_path / name / 'summary.json').read_text())


def test_under_dp_the_metrics_the_noise_does_not_cover_are_withheld_by_default(tmp_path):
  loop.run_experiment(_config(tmp_path))
  rows = _rows(tmp_path)
  columns = set(rows[0])
  for private in ('train_examples', 'train_loss', 'train_accuracy', 'fed_eval_accuracy',
                  'round_seconds'):
    assert private not in columns, private
  assert {'dp_epsilon', 'dp_delta', 'central_eval_accuracy'} <= columns
  assert 'aggregator/num_clients' in columns  # m, public under fixed-size sampling
  privacy = _summary(tmp_path)['privacy']
  assert privacy['releases'] == 3 and privacy['accounting']['sampling'] == 'fixed'
  assert 'replace-one' in json.dumps(privacy['accounting'])
  assert 'train_examples' in privacy['metrics']['withheld']
  assert 'train_loss' not in _summary(tmp_path)['final_metrics']


def test_public_metrics_are_released_and_said_not_to_be_covered(tmp_path):
  loop.run_experiment(_config(tmp_path, dp_metrics='public'))
  rows = _rows(tmp_path)
  assert all(int(r['train_examples']) > 0 for r in rows)  # the exact totals, in the clear
  metrics = _summary(tmp_path)['privacy']['metrics']
  assert 'train_examples' in metrics['released_not_covered']
  assert 'NOT covered' in metrics['statement']


def test_a_round_rerun_after_a_kill_is_counted_again(tmp_path, monkeypatch):
  cfg = _config(tmp_path, rounds=4, eval_every=0)
  original = checkpoint.save_checkpoint

  def killed_at_round_4(directory, round_num, state, *args, **kwargs):
    if round_num == 4:
      raise KeyboardInterrupt  # after round 4's release, before its checkpoint
    return original(directory, round_num, state, *args, **kwargs)

  monkeypatch.setattr(checkpoint, 'save_checkpoint', killed_at_round_4)
  with pytest.raises(KeyboardInterrupt):
    loop.run_experiment(cfg)
  monkeypatch.setattr(checkpoint, 'save_checkpoint', original)
  loop.run_experiment(cfg)  # resumes from the round-2 checkpoint: rounds 3 and 4 run again
  privacy = _summary(tmp_path)['privacy']
  assert privacy['releases'] == 6 and privacy['repeated_rounds'] == {'3': 2, '4': 2}
  six = accounting.epsilon(1.2, 4, 10, 6, _DELTA)  # independently: 6 releases of the mechanism
  assert privacy['epsilon'] == pytest.approx(six, rel=1e-9)
  assert float(_rows(tmp_path)[-1]['dp_epsilon']) == pytest.approx(six, rel=1e-9)
  assert six > accounting.epsilon(1.2, 4, 10, 4, _DELTA)
  assert [r['round'] for r in _rows(tmp_path)] == ['1', '2', '3', '4']


def test_sampling_under_dp_is_secret_and_resumable(tmp_path):
  cfg = _config(tmp_path)
  exp, ckpt = str(tmp_path / 'e'), str(tmp_path / 'e' / 'checkpoints')
  os.makedirs(ckpt)
  mechanism = dp.GaussianMechanism(1.2, 4, 0.5, adaptive=False)
  first = release_lib.RoundRelease(cfg, mechanism, exp, ckpt, population=10)
  again = release_lib.RoundRelease(cfg, mechanism, exp, ckpt, population=10)
  assert first.sampling_entropy == again.sampling_entropy != cfg.seed
  secret_file = os.path.join(ckpt, 'run_secret')
  assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
  task = loop.build_task(cfg)
  secret_plans = plan_lib.RoundPlanner(task, 4, seed=0, sampling_entropy=first.sampling_entropy)
  public_plans = plan_lib.RoundPlanner(task, 4, seed=0)
  assert any(secret_plans.plan(r).sampled != public_plans.plan(r).sampled for r in range(1, 6))
  no_dp = release_lib.RoundRelease(cfg, None, exp, ckpt, population=10)
  assert no_dp.sampling_entropy == cfg.seed and no_dp.apply({'train_loss': 1.0}) == {
      'train_loss': 1.0}


def test_poisson_sampling_is_accounted_as_poisson(tmp_path):
  loop.run_experiment(_config(tmp_path, client_sampling='poisson', eval_every=0))
  privacy = _summary(tmp_path)['privacy']
  assert privacy['accounting']['sampling'] == 'poisson'
  assert 'add/remove-one' in json.dumps(privacy['accounting'])
  assert privacy['epsilon'] == pytest.approx(
      accounting.epsilon(1.2, 4, 10, 3, _DELTA, sampling='poisson'), rel=1e-9)
  assert 'aggregator/num_clients' not in _rows(tmp_path)[0]  # the sample size is private


def test_poisson_rounds_sample_a_varying_number_of_clients_at_rate_m_over_n(tmp_path):
  task = loop.build_task(_config(tmp_path))
  planner = plan_lib.RoundPlanner(task, 4, seed=1, sampling_scheme='poisson')
  sizes = [len(planner.plan(r).sampled) for r in range(1, 401)]
  assert len(set(sizes)) > 3 and min(sizes) < 4 < max(sizes)
  # Binomial(10, 0.4): mean 4, std of the mean over 400 rounds ≈ 0.077.
  assert np.mean(sizes) == pytest.approx(4.0, abs=0.35)


def test_without_dp_nothing_is_withheld_and_there_is_no_privacy_section(tmp_path):
  loop.run_experiment(_config(tmp_path, aggregation={}, dp_delta=None))
  assert 'train_examples' in _rows(tmp_path)[0]
  assert 'privacy' not in _summary(tmp_path)
  assert not os.path.exists(tmp_path / 'e' / 'privacy_ledger.jsonl')


@pytest.mark.parametrize('settings, message', [
    ({'dp_metrics': 'noised'}, "unknown dp_metrics 'noised'"),
    ({'client_sampling': 'stratified'}, "unknown client_sampling 'stratified'"),
    ({'client_sampling': 'poisson', 'simulation': 'fused', 'aggregation': {}, 'dp_delta': None},
     'client_sampling=fixed rounds only'),
])
def test_bad_release_settings_are_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    loop.run_experiment(_config(tmp_path, **settings))


@pytest.mark.parametrize('faults', [
    {'dropout_fraction': 0.25},
    {'straggler_fraction': 0.5},
    {'byzantine_fraction': 0.25, 'attack': 'sign_flip', 'attack_scale': 10.0},
])
def test_every_fault_path_releases_one_counted_mechanism_per_round(tmp_path, faults):
  # Dropouts, stragglers and Byzantine clients change who contributes what, never the mechanism:
  # one release per round of the same z (the noise is sized for clients_per_round, not for the
  # clients that reported).
  loop.run_experiment(_config(tmp_path, eval_every=0, **faults))
  privacy = _summary(tmp_path)['privacy']
  assert privacy['releases'] == 3 and not privacy['repeated_rounds']
  assert privacy['mechanism']['noise_multiplier'] == 1.2
  assert privacy['epsilon'] == pytest.approx(accounting.epsilon(1.2, 4, 10, 3, _DELTA), rel=1e-9)
  rows = _rows(tmp_path)
  assert all('faults/dropped' in r for r in rows)  # the simulated counts follow from the config
  assert 'train_examples' not in rows[0]


def test_dp_over_two_workers_releases_one_counted_mechanism_per_round(tmp_path):
  from tff_lab.runtime import workers  # pylint: disable=g-import-not-at-top
  pool = [workers.ManagedWorker() for _ in range(2)]
  try:
    loop.run_experiment(_config(tmp_path, eval_every=0,
                                workers=tuple(f'127.0.0.1:{w.port}' for w in pool)))
  finally:
    for worker in pool:
      worker.stop()
  privacy = _summary(tmp_path)['privacy']
  assert privacy['releases'] == 3  # the noise is added once per round, after the merge
  assert privacy['epsilon'] == pytest.approx(accounting.epsilon(1.2, 4, 10, 3, _DELTA), rel=1e-9)
  assert all(r['dp_accounting'] == privacy['accounting']['description'] for r in _rows(tmp_path))


def _release(tmp_path, noise_multiplier, population, delta):
  """A RoundRelease built directly (no training), fixed-size sampling of 4 clients."""
  cfg = types.SimpleNamespace(seed=0, dp_delta=delta, clients_per_round=4,
                              client_sampling='fixed', dp_metrics='withheld')
  exp, ckpt = tmp_path / 'e', tmp_path / 'e' / 'checkpoints'
  os.makedirs(ckpt, exist_ok=True)
  mechanism = dp.GaussianMechanism(noise_multiplier, 4, 0.5, adaptive=False)
  return release_lib.RoundRelease(cfg, mechanism, str(exp), str(ckpt), population=population)


def _absl_warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.name == 'absl' and r.levelno == logging.WARNING]


def test_a_large_delta_is_warned_once_when_the_release_is_set_up(tmp_path, caplog):
  population = 20  # digits: the default δ = 20^-1.1 ≈ 0.037 is below 1/N but above 0.01
  with caplog.at_level(logging.WARNING, logger='absl'):
    release = _release(tmp_path, 1.2, population, delta=None)
    at_start = _absl_warnings(caplog)
    for round_num in (1, 2):
      release.record(round_num)
      release.epsilon_metrics()
    summary = release.summary()
  expected = accounting.delta_warnings(accounting.default_delta(population), population)
  assert len(expected) == 1 and 'above 0.01' in expected[0]
  assert at_start == expected  # before any round
  assert _absl_warnings(caplog) == expected  # not again each round, nor at the end
  assert summary['warnings'] == expected


def test_delta_at_least_one_over_n_is_warned_at_start(tmp_path, caplog):
  with caplog.at_level(logging.WARNING, logger='absl'):
    _release(tmp_path, 1.2, 10, delta=0.1)
  warnings = _absl_warnings(caplog)
  assert len(warnings) == 1 and '1/N=0.1' in warnings[0]


def test_epsilon_above_10_is_warned_once_in_the_round_it_is_first_exceeded(tmp_path, caplog):
  z, population, delta = 1.2, 10, 1e-3  # δ below 1/N and 0.01: no δ warning
  epsilons = [accounting.epsilon(z, 4, population, t, delta) for t in range(1, 6)]
  first = next(t for t, eps in enumerate(epsilons, 1) if eps > accounting.WARN_EPSILON)
  assert first > 1  # the warning must wait for that round
  with caplog.at_level(logging.WARNING, logger='absl'):
    release = _release(tmp_path, z, population, delta)
    counts = []
    for round_num in range(1, len(epsilons) + 1):
      release.record(round_num)
      assert release.epsilon_metrics()['dp_epsilon'] == pytest.approx(epsilons[round_num - 1])
      counts.append(len(_absl_warnings(caplog)))
    summary = release.summary()
  assert counts == [0] * (first - 1) + [1] * (len(epsilons) - first + 1)
  warned = _absl_warnings(caplog)
  assert warned == accounting.epsilon_warnings(epsilons[first - 1])  # the ε of that round
  assert summary['warnings'] == accounting.epsilon_warnings(epsilons[-1])  # the final ε


def test_summary_logs_an_epsilon_warning_the_rounds_did_not(tmp_path, caplog):
  release = _release(tmp_path, 1.2, 10, 1e-3)
  for round_num in range(1, 6):
    release.record(round_num)  # epsilon_metrics never called (no metrics row written)
  with caplog.at_level(logging.WARNING, logger='absl'):
    summary = release.summary()
    release.summary()
  assert _absl_warnings(caplog) == summary['warnings'] and len(summary['warnings']) == 1


def test_without_dp_nothing_is_warned(tmp_path, caplog):
  cfg = types.SimpleNamespace(seed=0, dp_delta=None, clients_per_round=4,
                              client_sampling='fixed', dp_metrics='withheld')
  with caplog.at_level(logging.WARNING, logger='absl'):
    release = release_lib.RoundRelease(cfg, None, str(tmp_path), str(tmp_path), population=3)
    assert release.epsilon_metrics() == {} and release.summary() is None
  assert not _absl_warnings(caplog)
