"""The backend registry: one protocol, checks before tracing, and the loop only calls it."""

import csv
import json

import numpy as np
import pytest

from tff_lab.simulation import backends
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop


def _config(tmp_path, name='e', **kwargs):
  return config_lib.ExperimentConfig(
      task='seed_linear', rounds=3, clients_per_round=4, eval_every=0, checkpoint_every=1,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False, **kwargs)


def test_the_builtin_backends_are_registered():
  assert list(backends.BACKENDS) == ['tff', 'fused', 'vectorized', 'secure', 'async']
  assert backends.simulation_names() == ('auto', 'tff', 'fused', 'vectorized', 'async')
  cfg = config_lib.ExperimentConfig(simulation='tff')
  assert backends.backend_name(cfg) == 'tff'
  cfg.aggregation = {'secure_aggregation': True}
  assert backends.backend_name(cfg) == 'secure'


@pytest.mark.parametrize('settings, message', [
    ({'simulation': 'gpu'}, "unknown simulation 'gpu'; choose one of"),
    ({'simulation': 'fused', 'algorithm': 'fedsgd'}, 'not fedsgd'),
    ({'simulation': 'vectorized', 'aggregation': {'aggregator': 'median'}},
     'runs the plain mean only; --simulation=fused runs the aggregation settings'),
    ({'simulation': 'vectorized', 'aggregation': {'secure_aggregation': True}},
     'cannot be combined with --simulation=vectorized'),
    ({'simulation': 'fused', 'algorithm': 'fedsgd', 'aggregation': {'secure_aggregation': True}},
     'runs the local-SGD algorithms of the fused path, not --algorithm=fedsgd'),
    ({'simulation': 'fused',
      'aggregation': {'secure_aggregation': True, 'secagg_private_metrics': True}},
     '--secagg_private_metrics .* needs --simulation=tff'),
])
def test_each_backend_refuses_what_it_cannot_run_in_one_line(settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as e:
    config_lib.ExperimentConfig(**settings).validate()
  assert '\n' not in str(e.value)


def test_a_name_is_registered_once():
  with pytest.raises(ValueError, match="backend 'tff' is already registered"):
    backends.register(backends.BACKENDS['tff'])


def _describe(plan):
  # TFF's ClientSpec compares by identity; compare what it holds.
  return (plan.round_num, plan.sampled, plan.roles,
          [(c.client_id, c.shuffle_seed, c.train_spec.num_epochs, c.train_spec.batch_size,
            c.train_spec.max_elements, c.train_spec.shuffle_buffer_size, c.flip_labels, c.attack)
           for c in plan.clients])


@pytest.fixture
def recording_backend():
  """A backend registered from outside: TFF's runner, recording every plan it is given."""
  seen = []

  class Recording:

    def __init__(self, context):
      self._inner = backends.BACKENDS['tff'].build(context)

    def next(self, state, plan):
      seen.append(plan)
      return self._inner.next(state, plan)

    def close(self):
      seen.append('closed')

  backends.register(backends.Backend('recording', 'records plans', lambda config: None,
                                     Recording))
  yield seen
  del backends.BACKENDS['recording']


def test_the_loop_runs_any_registered_backend_on_the_planners_plans(tmp_path, recording_backend):
  loop.run_experiment(_config(tmp_path, 'rec', simulation='recording'))
  loop.run_experiment(_config(tmp_path, 'tff'))
  plans, closed = recording_backend[:-1], recording_backend[-1]
  assert closed == 'closed'
  task = loop.build_task(_config(tmp_path))
  planner = plan_lib.RoundPlanner(task, 4, seed=0)
  assert [_describe(p) for p in plans] == [_describe(planner.plan(r)) for r in (1, 2, 3)]
  # Same plans, same runner underneath: the same weights as the plain TFF backend.
  template = loop.build_process(_config(tmp_path), task).initialize()
  a = checkpoint.load_checkpoint(str(tmp_path / 'rec' / 'checkpoints'), 3, template)
  b = checkpoint.load_checkpoint(str(tmp_path / 'tff' / 'checkpoints'), 3, template)
  for x, y in zip(a.global_model_weights.trainable, b.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('settings, kwargs, chosen, reason', [
    ({}, {}, 'fused', 'the fastest backend for this configuration'),
    ({'aggregation': {'aggregator': 'median'}}, {}, 'fused', 'the fastest'),
    ({'aggregation': {'adaptive_clip': True}}, {}, 'fused', 'the fastest'),
    ({'algorithm': 'fedsgd'}, {}, 'tff', 'not fused (--simulation=fused runs'),
    ({'algorithm': 'scaffold'}, {}, 'fused', 'the fastest'),  # its own runner, fused phase
    ({'aggregation': {'secure_aggregation': True}}, {}, 'fused', 'the fastest'),
    ({'algorithm': 'fedsgd', 'aggregation': {'secure_aggregation': True}}, {}, 'tff',
     'not fused (--secure_aggregation with --simulation=fused runs'),
    ({'workers': ('localhost:1',)}, {}, 'tff', 'does not use --workers'),
    ({}, {'has_model_aggregator': True}, 'tff', 'a model_aggregator passed to run_experiment'),
])
def test_auto_picks_the_fastest_backend_that_runs_the_configuration(settings, kwargs, chosen,
                                                                     reason):
  config = config_lib.ExperimentConfig(**settings)
  assert config.simulation == 'auto'  # the default
  config.validate()
  resolved, why = backends.resolve(config, **kwargs)
  assert resolved.simulation == chosen and why.startswith(f'--simulation=auto runs {chosen}: ')
  assert reason in why and '\n' not in why
  assert resolved == config_lib.ExperimentConfig(**dict(settings, simulation=chosen))
  for name in ('tff', 'fused'):  # any other value is left alone
    given = config_lib.ExperimentConfig(**dict(settings, simulation=name))
    assert backends.resolve(given) == (given, '')


def test_auto_is_refused_in_one_line_when_no_backend_runs_it():
  with pytest.raises(config_lib.ConfigError, match="runs client SGD \\(the paper's\\), not --client_optimizer=adam") as e:
    config_lib.ExperimentConfig(algorithm='scaffold', client_optimizer='adam').validate()
  assert '\n' not in str(e.value)


def test_the_loop_runs_and_records_the_backend_auto_chose(tmp_path, caplog):
  summary = loop.run_experiment(_config(tmp_path, 'auto'))
  assert 'runs fused' in caplog.text
  reference = loop.run_experiment(_config(tmp_path, 'tff', simulation='tff'))
  saved = json.loads((tmp_path / 'auto' / 'config.json').read_text())
  assert saved['simulation'] == 'fused'
  history = (tmp_path / 'auto' / 'history.jsonl').read_text()
  assert '"fused"' in history
  np.testing.assert_allclose(summary['final_metrics']['train_loss'],
                             reference['final_metrics']['train_loss'], rtol=1e-5)
  # The fused rounds report the communication the TFF path's mean reports, same values.
  fused_rows = _rows(tmp_path / 'auto' / 'metrics.csv')
  tff_rows = _rows(tmp_path / 'tff' / 'metrics.csv')
  for key in ('upload_bytes_per_client', 'download_bytes_per_client', 'aggregator/num_clients',
              'compression_ratio'):
    assert [r[key] for r in fused_rows] == [r[key] for r in tff_rows], key


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_a_next_token_task_trains_on_fused_as_on_tff_and_is_refused_where_it_cannot(tmp_path):
  """A sequence model has one loss per position and one prediction per non-padding target. The
  fused FedAvg round trains it as TFF does, and `auto` picks it; the paths that cannot (the
  vectorized loop, algorithms with their own runner) refuse in one line, known only once the task
  is built, before any tracing and before the experiment directory is written."""
  def config(name, simulation, **kwargs):
    return config_lib.ExperimentConfig(
        task='shakespeare_plays',
        task_options={'max_clients': 4, 'max_chars_per_client': 600, 'seed': 1,
                      'cache_dir': str(tmp_path / 'cache')},
        rounds=1, clients_per_round=2, eval_every=0, root_output_dir=str(tmp_path),
        experiment_name=name, progress=False, simulation=simulation, **kwargs)

  for name, simulation, kwargs, message in [
      ('vectorized', 'vectorized', {}, '^--simulation=vectorized cannot vectorise a sequence'),
      ('scaffold', 'fused', {'algorithm': 'scaffold'},
       '^--algorithm=scaffold on --simulation=fused counts one prediction per example, not a '
       "next_token task's")]:
    with pytest.raises(config_lib.ConfigError, match=message) as e:
      loop.run_experiment(config(name, simulation, **kwargs))
    assert '\n' not in str(e.value) and not (tmp_path / name).exists()
  loop.run_experiment(config('auto', 'auto'))
  loop.run_experiment(config('tff', 'tff'))
  assert json.loads((tmp_path / 'auto' / 'config.json').read_text())['simulation'] == 'fused'
  fused, tff_row = _rows(tmp_path / 'auto' / 'metrics.csv')[-1], _rows(
      tmp_path / 'tff' / 'metrics.csv')[-1]
  for key in ('train_loss', 'train_accuracy', 'train_examples'):
    assert float(fused[key]) == pytest.approx(float(tff_row[key]), rel=1e-4), key
