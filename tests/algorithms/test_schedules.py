"""Learning-rate schedules: the formulas, their validation, and every backend applying them."""

import dataclasses

import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab.algorithms import schedules
from tff_lab.simulation import backends
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop


def _expected_factor(kind, r, rate=0.5, period=10, warmup=0):
  # Written from the definitions (Reddi et al. 2021's step/exponential decay, inverse sqrt,
  # a linear warm-up), independently of the module under test.
  t = r - 1
  value = {'constant': 1.0, 'step': rate ** np.floor(t / period),
           'exponential': np.power(rate, t / period),
           'inverse_sqrt': 1 / np.sqrt(1 + t / period)}[kind]
  return value * (min(1.0, r / warmup) if warmup else 1.0)


@pytest.mark.parametrize('kind', schedules.KINDS)
@pytest.mark.parametrize('warmup', [0, 4])
def test_factors_follow_the_definitions(kind, warmup):
  schedule = schedules.LearningRateSchedule(kind, decay_rate=0.3, decay_rounds=3,
                                            warmup_rounds=warmup)
  got = [schedule.rate(0.2, r) for r in range(1, 31)]
  want = [0.2 * _expected_factor(kind, r, 0.3, 3, warmup) for r in range(1, 31)]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert schedule.is_constant == (kind == 'constant' and not warmup)


@pytest.mark.parametrize('settings, message', [
    ({'schedule': 'cosine'}, "unknown --client_lr_schedule='cosine'"),
    ({'schedule': 'step', 'decay_rate': 0.0}, r'--client_lr_decay_rate must be in \(0, 1\]'),
    ({'schedule': 'step', 'decay_rate': 1.5}, r'--client_lr_decay_rate must be in \(0, 1\]'),
    ({'schedule': 'exponential', 'decay_rounds': 0}, '--client_lr_decay_rounds must be an '
     'integer >= 1'),
    ({'warmup_rounds': -1}, '--client_lr_warmup_rounds must be an integer >= 0'),
    ({'warmup_rounds': 2.5}, '--client_lr_warmup_rounds must be an integer >= 0'),
    ({'decay_rate': 0.1}, '--client_lr_decay_rate has no effect with '
     '--client_lr_schedule=constant'),
    ({'schedule': 'inverse_sqrt', 'decay_rate': 0.1}, '--client_lr_decay_rate has no effect'),
    ({'gamma': 0.1}, r"unknown client learning-rate schedule setting\(s\) \['gamma'\]"),
])
def test_bad_settings_are_one_line_config_errors(settings, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.ExperimentConfig(client_lr_schedule=settings).validate()


def test_a_client_schedule_needs_an_algorithm_whose_clients_take_it():
  with pytest.raises(config_lib.ConfigError, match='--client_lr_schedule applies to '
                     '--algorithm=fedavg|fedavg_unweighted|fedprox, not fedsgd'):
    config_lib.ExperimentConfig(algorithm='fedsgd',
                                client_lr_schedule={'schedule': 'step'}).validate()
  config_lib.ExperimentConfig(algorithm='fedsgd',  # the server rate is every algorithm's
                              server_lr_schedule={'schedule': 'step'}).validate()


def _config(tmp_path, name, **kw):
  settings = dict(task='digits', task_options={'model': 'mlp', 'num_clients': 8},
                  clients_per_round=3, rounds=3, eval_every=0, checkpoint_every=1,
                  client_learning_rate=0.2, server_optimizer='sgdm', server_learning_rate=0.9,
                  server_optimizer_hparams={'momentum': 0.5},
                  client_lr_schedule={'schedule': 'exponential', 'decay_rate': 0.5,
                                      'decay_rounds': 1},
                  server_lr_schedule={'schedule': 'step', 'decay_rate': 0.5, 'decay_rounds': 2,
                                      'warmup_rounds': 2},
                  root_output_dir=str(tmp_path), experiment_name=name, progress=False)
  settings.update(kw)
  return config_lib.ExperimentConfig(**settings)


def _final_weights(tmp_path, config):
  task = loop.build_task(config)
  template = loop.build_process(config, task).initialize()
  state = checkpoint.load_checkpoint(str(tmp_path / config.experiment_name / 'checkpoints'),
                                     config.rounds, template)
  return [np.asarray(w) for w in state.global_model_weights.trainable]


def test_scheduled_rounds_equal_rounds_run_at_each_rounds_fixed_rates(tmp_path):
  """The schedule's rounds against constant-rate TFF processes, one per round, built by hand."""
  config = _config(tmp_path, 'scheduled')
  summary = loop.run_experiment(config)
  got = _final_weights(tmp_path, config)
  task = loop.build_task(config)
  planner = plan_lib.RoundPlanner(task, config.clients_per_round, seed=config.seed)
  state, rates = None, []
  for r in range(1, config.rounds + 1):
    client_lr = 0.2 * 0.5 ** (r - 1)
    server_lr = 0.9 * 0.5 ** ((r - 1) // 2) * min(1.0, r / 2)
    rates.append((client_lr, server_lr))
    process = algorithms.create_learning_process(
        'fedavg', task, algorithms.create_optimizer('sgd', client_lr),
        algorithms.create_optimizer('sgdm', server_lr, momentum=0.5))
    if state is None:
      state = process.set_model_weights(process.initialize(),
                                        plan_lib.initial_model_weights(task, config.seed))
    else:  # the same weights and momentum, at this round's rate
      fresh = process.initialize()
      finalizer = dict(state.finalizer, learning_rate=np.float32(server_lr))
      state = fresh._replace(global_model_weights=state.global_model_weights,
                             finalizer=finalizer)
    state = backends.ProcessRunner(process, task).next(state, planner.plan(r)).state
  for a, b in zip(got, state.global_model_weights.trainable):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got[0], plan_lib.initial_model_weights(task, 0).trainable[0])
  final = summary['final_metrics']
  np.testing.assert_allclose([final['client_learning_rate'], final['server_learning_rate']],
                             rates[-1], rtol=1e-6)


@pytest.mark.parametrize('simulation, kw', [
    ('fused', {}), ('tff', {'algorithm': 'fedprox', 'algorithm_hparams': {'mu': 0.5}}),
    ('tff', {'aggregation': {'secure_aggregation': True}}),
])
def test_every_backend_applies_the_schedule_as_the_tff_path_does(tmp_path, simulation, kw):
  reference = _config(tmp_path, 'reference', **kw)
  if 'aggregation' in kw:  # the plain TFF path of the secure run
    reference = dataclasses.replace(reference, aggregation={})
  other = _config(tmp_path, f'other_{simulation}', simulation=simulation, **kw)
  loop.run_experiment(reference)
  loop.run_experiment(other)
  for a, b in zip(_final_weights(tmp_path, reference), _final_weights(tmp_path, other)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_resume_is_exact_with_schedules(tmp_path):
  straight = _config(tmp_path, 'straight', rounds=4)
  loop.run_experiment(straight)
  loop.run_experiment(_config(tmp_path, 'resumed', rounds=2))
  loop.run_experiment(_config(tmp_path, 'resumed', rounds=4))  # extends from round 2's state
  for a, b in zip(_final_weights(tmp_path, straight),
                  _final_weights(tmp_path, _config(tmp_path, 'resumed', rounds=4))):
    np.testing.assert_array_equal(a, b)
