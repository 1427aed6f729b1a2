"""Mime-Lite, step by step against an independent NumPy implementation of the paper's MimeLite.

The base optimisers follow TFF's definitions (`tff.learning.optimizers`: SGD with momentum
accumulating a ← βa + g; Adam with its bias-corrected rate), written out here in NumPy.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab import algorithms
from tff_lab.algorithms import mime
from tff_lab.aggregators import dp as dp_lib
from tff_lab.data import client_data
from tff_lab.simulation import plan as plan_lib
from tff_lab.tasks import task as task_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(REPO, 'experiments', 'run_experiment.py')

BATCH, EPOCHS = 3, 2
SIZES = (6, 9, 12, 15)  # unequal clients (so the weighting matters), each a multiple of BATCH


def _arrays(seed=0):
  rng = np.random.default_rng(seed)
  w = np.array([1.0, -2.0, 0.5])
  out = {}
  for i, n in enumerate(SIZES):
    x = rng.normal(loc=0.3 * i, size=(n, 3)).astype(np.float32)  # feature skew per client
    out[f'c{i}'] = (x, (x @ w + 0.5 * rng.normal(size=n) > 0.2 * i).astype(np.float32)[:, None])
  return out


def _task():
  train = _arrays(0)
  return task_lib.Task(
      name='tiny_logistic', train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(_arrays(1)), centralized_test_data=client_data.pool(train),
      model_fn=lambda: tf.keras.Sequential(
          [tf.keras.layers.Input((3,)), tf.keras.layers.Dense(1, activation='sigmoid')]),
      loss_fn=tf.keras.losses.BinaryCrossentropy, prediction_kind='binary',
      # Unshuffled fixed batches: each epoch is the client's data in order, in batches of 3.
      train_spec=task_lib.ClientSpec(num_epochs=EPOCHS, batch_size=BATCH, shuffle_buffer_size=1))


def _grad(params, x, y):
  """∇ of the mean binary cross-entropy of sigmoid(x·w + b) (float64)."""
  w, b = params
  err = 1.0 / (1.0 + np.exp(-(x @ w + b))) - y
  return [x.T @ err / len(y), err.sum(axis=0) / len(y)]


class _NumpySGDM:
  """TFF's SGD(M): a ← βa + g, w ← w − η·a (no state without momentum)."""

  def __init__(self, lr, momentum=None):
    self.lr, self.beta = lr, momentum

  def init(self, params):
    return [np.zeros_like(p) for p in params] if self.beta else []

  def step(self, state, params, grads):
    if not self.beta:
      return state, [p - self.lr * g for p, g in zip(params, grads)]
    acc = [self.beta * a + g for a, g in zip(state, grads)]
    return acc, [p - self.lr * a for p, a in zip(params, acc)]


class _NumpyAdam:
  """TFF's Adam: moments a, v with step t; rate η·√(1−β₂ᵗ)/(1−β₁ᵗ); w ← w − rate·a/(√v + ε)."""

  def __init__(self, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, epsilon

  def init(self, params):
    return (0, [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params])

  def step(self, state, params, grads):
    t, acc, pre = state
    t += 1
    acc = [a + (g - a) * (1 - self.b1) for a, g in zip(acc, grads)]
    pre = [v + (g * g - v) * (1 - self.b2) for v, g in zip(pre, grads)]
    rate = self.lr * np.sqrt(1 - self.b2 ** t) / (1 - self.b1 ** t)
    return (t, acc, pre), [p - rate * a / (np.sqrt(v) + self.eps)
                           for p, a, v in zip(params, acc, pre)]


def _numpy_mime_lite(arrays, params, plans, base, server_lr):
  """MimeLite (Karimireddy et al. 2021, Alg. 1) with weights n_i = epochs × examples."""
  state = base.init(params)
  trajectory = []
  for plan in plans:
    deltas, full_grads, weights = [], [], []
    for cid in plan.client_ids:
      x, y = (a.astype(np.float64) for a in arrays[cid])
      full_grads.append(_grad(params, x, y))  # at the broadcast model
      local = [p.copy() for p in params]
      for _ in range(EPOCHS):
        for i in range(0, len(y), BATCH):
          _, local = base.step(state, local, _grad(local, x[i:i + BATCH], y[i:i + BATCH]))
      deltas.append([p - q for p, q in zip(params, local)])
      weights.append(EPOCHS * len(y))
    p = np.asarray(weights, np.float64) / np.sum(weights)
    mean = lambda parts: [sum(p_i * part[j] for p_i, part in zip(p, parts))
                          for j in range(len(params))]
    state, _ = base.step(state, [np.zeros_like(q) for q in params], mean(full_grads))
    params = [q - server_lr * d for q, d in zip(params, mean(deltas))]  # server SGD
    trajectory.append(([q.copy() for q in params], state))
  return trajectory


def _tff_optimizer_arrays(optimizer_state, name):
  """The state arrays the NumPy optimiser keeps, read from TFF's optimiser state."""
  if name == 'sgdm':
    return [np.asarray(a) for a in optimizer_state['accumulator']]
  if name == 'adam':
    return (int(optimizer_state['step']), [np.asarray(a) for a in optimizer_state['accumulator']],
            [np.asarray(a) for a in optimizer_state['preconditioner']])
  return []


@pytest.mark.parametrize('name, base, server_lr', [
    ('sgdm', _NumpySGDM(0.1, momentum=0.9), 1.0),
    ('sgdm', _NumpySGDM(0.1, momentum=0.9), 0.7),
    ('adam', _NumpyAdam(0.05), 1.0),
    ('sgd', _NumpySGDM(0.2), 1.0),  # no state: FedAvg with an extra gradient pass
])
def test_mime_lite_rounds_equal_numpy_step_by_step(name, base, server_lr):
  task = _task()
  hparams = {'momentum': 0.9} if name == 'sgdm' else {}
  process = mime.SPEC.build_process(task, algorithms.create_optimizer(name, base.lr, **hparams),
                                    algorithms.create_optimizer('sgd', server_lr))
  theta0 = plan_lib.initial_model_weights(task, 3)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, 3, seed=4)
  plans = [planner.plan(r) for r in range(1, 4)]
  arrays = _arrays(0)
  expected = _numpy_mime_lite(arrays, [w.astype(np.float64) for w in theta0.trainable], plans,
                              base, server_lr)
  datasets = plan_lib.PlanDatasets(task)
  for r, (plan, (params, opt_state)) in enumerate(zip(plans, expected), start=1):
    out = process.next(state, datasets(plan))
    state = out.state
    for got, want in zip(state.global_model_weights.trainable, params):
      np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f'model, round {r}')
    got_state = _tff_optimizer_arrays(state.client_work[0], name)
    if name == 'adam':
      assert got_state[0] == opt_state[0] == r
      got_state, opt_state = got_state[1] + got_state[2], opt_state[1] + opt_state[2]
    assert len(got_state) == len(opt_state)
    for got, want in zip(got_state, opt_state):
      np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f'optimiser state, round {r}')
    assert out.metrics['client_work']['train']['num_examples'] == EPOCHS * sum(
        len(arrays[c][1]) for c in plan.client_ids)


def test_the_frozen_state_matters():
  """With momentum, Mime-Lite ends elsewhere than FedAvg with the same client optimiser."""
  arrays, params = _arrays(0), [np.full((3, 1), 0.1), np.zeros(1)]
  planner = plan_lib.RoundPlanner(_task(), 3, seed=4)
  plans = [planner.plan(r) for r in range(1, 4)]
  mime_end = _numpy_mime_lite(arrays, params, plans, _NumpySGDM(0.1, 0.9), 1.0)[-1][0]
  fedavg_end = _numpy_mime_lite(arrays, params, plans, _NumpySGDM(0.1), 1.0)[-1][0]
  assert np.abs(mime_end[0] - fedavg_end[0]).max() > 1e-3


def _config(tmp_path, name, rounds, **kwargs):
  kwargs.setdefault('client_optimizer', 'sgdm')
  return config_lib.ExperimentConfig(
      task='digits', task_options={'num_clients': 8, 'model': 'mlp'}, algorithm='mime_lite',
      rounds=rounds, clients_per_round=3, eval_every=0, checkpoint_every=2,
      client_learning_rate=0.02, client_batch_size=32, root_output_dir=str(tmp_path),
      experiment_name=name, progress=False, **kwargs)


def _final(tmp_path, name, rounds):
  cfg = _config(tmp_path, name, rounds)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_mime_lite_runs_from_the_loop_and_resumes_bit_identically(tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 4))
  loop.run_experiment(_config(tmp_path, 'resumed', 2))
  loop.run_experiment(_config(tmp_path, 'resumed', 4))  # a new call resumes from round 2
  a, b = _final(tmp_path, 'straight', 4), _final(tmp_path, 'resumed', 4)
  flat_a, flat_b = tf.nest.flatten(a.state), tf.nest.flatten(b.state)
  assert len(flat_a) == len(flat_b)
  for x, y in zip(flat_a, flat_b):  # model, server optimiser and the base optimiser's state
    np.testing.assert_array_equal(x, y)
  momentum = a.state.client_work[0]['accumulator']
  assert max(np.abs(np.asarray(m)).max() for m in momentum) > 0
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3', '4']
  assert np.isfinite(float(rows[-1]['train_loss']))


def test_the_binary_runs_mime_lite_with_adam(tmp_path):
  cmd = [sys.executable, BINARY, '--task=digits', '--digits_model=mlp', '--digits_num_clients=6',
         '--rounds=2', '--clients_per_round=2', '--eval_every=2', '--algorithm=mime_lite',
         '--client_optimizer=adam', '--client_learning_rate=0.01', '--server_optimizer=sgdm',
         f'--root_output_dir={tmp_path}', '--experiment_name=cli', '--noprogress']
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  with open(tmp_path / 'cli' / 'summary.json') as f:
    summary = json.load(f)
  assert summary['config']['algorithm'] == 'mime_lite'
  assert 0 <= summary['final_metrics']['central_eval_accuracy'] <= 1


@pytest.mark.parametrize('settings, message', [
    ({'aggregation': {'clip_norm': 1.0}}, 'plain weighted mean'),
    ({'aggregation': {'dp': 'fixed', 'noise_multiplier': 1.0, 'clip_norm': 1.0}},
     'plain weighted mean'),
    ({'aggregation': {'secure_aggregation': True}}, 'plain weighted mean'),
    ({'aggregation': {'aggregator': 'median'}}, 'plain weighted mean'),
    ({'byzantine_fraction': 0.34}, 'does not simulate update attacks'),
    ({'simulation': 'fused'}, 'not mime_lite'),
    ({'algorithm_hparams': {'alpha': 0.1}}, 'alpha only applies to --algorithm=feddyn'),
])
def test_what_mime_lite_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as e:
    _config(tmp_path, 'bad', 2, **settings).validate()
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'bad').exists()


def test_a_dp_model_aggregator_is_refused_before_tracing():
  factory = dp_lib.attach_mechanism(
      tff.aggregators.MeanFactory(), dp_lib.GaussianMechanism(noise_multiplier=1.0, clients_per_round=3,
                                           clip_norm=1.0, adaptive=False))
  with pytest.raises(ValueError, match='cannot run a DP model_aggregator'):
    mime.build_mime_lite(_task(), algorithms.create_optimizer('sgdm', 0.1),
                         model_aggregator=factory)


def test_its_spec():
  spec = algorithms.registry.get('mime_lite')
  assert spec.weighted and not spec.runs_in_graph and not spec.client_state
  assert not spec.supports_secure_aggregation and spec.build_runner is None
  assert not spec.hparams
