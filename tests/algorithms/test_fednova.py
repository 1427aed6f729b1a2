"""FedNova, step by step against an independent NumPy Wang et al. 2020 (§4)."""

import csv

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import faults
from tff_lab import tasks
from tff_lab.algorithms import fednova
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop


def _client_arrays(task):
  out = {}
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out[cid] = (batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64))
  return out


def _numpy_rounds(arrays, theta0, plans, lr_local, lr_global, normalise, paper_weights=False):
  """Full-batch clients (τ_i = its plan's epochs), MSE: FedNova or (not `normalise`) FedAvg.

  p_i ∝ the examples client i processed (τ_i·|D_i|), or ∝ |D_i| with `paper_weights`.
  """
  x, trajectory = theta0.copy(), []
  for plan in plans:
    deltas, taus, ns = [], [], []
    for client in plan.clients:
      xs, ys = arrays[client.client_id]
      tau = client.train_spec.num_epochs
      y = x.copy()
      for _ in range(tau):
        # ∇ mean((xθ − y)²)
        y = y - lr_local * 2.0 / len(ys) * xs.T @ (xs @ y - ys.reshape(-1, 1))
      deltas.append(x - y)
      taus.append(tau)
      ns.append(len(ys) if paper_weights else tau * len(ys))
    p = np.asarray(ns, np.float64) / np.sum(ns)
    if normalise:  # x ← x − η_g·τ_eff·Σ p_i (x − y_i)/τ_i
      tau_eff = np.dot(p, taus)
      update = tau_eff * sum(p_i * d / t for p_i, d, t in zip(p, deltas, taus))
    else:  # x ← x − η_g·Σ p_i (x − y_i)
      update = sum(p_i * d for p_i, d in zip(p, deltas))
    x = x - lr_global * update
    trajectory.append((x.copy(), taus))
  return trajectory


def _full_batch_task(epochs):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  sizes = {len(y) for _, y in _client_arrays(task).values()}
  assert len(sizes) == 1  # equal clients, so that one batch is exactly one client's epoch
  # Full-batch clients, unshuffled: every epoch is one step on the client's whole dataset, so
  # τ_i = the client's epochs (a straggler's are fewer).
  return task.with_train_spec(batch_size=sizes.pop(), num_epochs=epochs, shuffle_buffer_size=1)


@pytest.mark.parametrize('weighting', fednova.WEIGHTINGS)
def test_fednova_rounds_equal_numpy_step_by_step_with_stragglers(weighting):
  lr_local, lr_global, epochs, m = 0.05, 0.8, 4, 4
  task = _full_batch_task(epochs)
  rounds = fednova.FedNovaRounds(task, lr_local, algorithms.create_optimizer('sgd', lr_global),
                                 weighting=weighting)
  paper = weighting == 'dataset_size'
  process = fednova.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr_local),
                                       algorithms.create_optimizer('sgd', lr_global))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, faults.FaultConfig(straggler_fraction=0.5), seed=5)
  plans = [planner.plan(r) for r in range(1, 7)]
  arrays, x0 = _client_arrays(task), theta0.trainable[0].astype(np.float64)
  expected = _numpy_rounds(arrays, x0, plans, lr_local, lr_global, normalise=True,
                           paper_weights=paper)
  unequal = 0
  for r, (plan, (x, taus)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], x, atol=1e-5,
                               err_msg=f'model, round {r}')
    nova = out.metrics['client_work']['fednova']
    # Equal clients: p_i ∝ τ_i (examples processed) or uniform (dataset sizes).
    p = np.ones(len(taus)) / len(taus) if paper else np.asarray(taus, np.float64) / np.sum(taus)
    assert nova['tau_eff'] == pytest.approx(np.dot(p, taus))
    assert (nova['min_local_steps'], nova['max_local_steps']) == (min(taus), max(taus))
    assert out.metrics['client_work']['train']['num_batches'] == sum(taus)
    unequal += len(set(taus)) > 1
  assert unequal >= 3  # the stragglers did make τ_i differ
  # Normalising matters under stragglers: FedAvg on the same plans ends elsewhere.
  fedavg_x = _numpy_rounds(arrays, x0, plans, lr_local, lr_global, normalise=False)[-1][0]
  assert np.abs(fedavg_x - expected[-1][0]).max() > 1e-3
  # And the two weightings are different algorithms under stragglers.
  other = _numpy_rounds(arrays, x0, plans, lr_local, lr_global, normalise=True,
                        paper_weights=not paper)[-1][0]
  assert np.abs(other - expected[-1][0]).max() > 1e-3


def test_fednova_is_fedavg_when_every_client_takes_the_same_number_of_steps():
  # Mini-batches, shuffled, an adaptive server optimiser: FedNova's τ_eff·Σ p_i d_i is FedAvg's
  # Σ p_i Δ_i whatever the server optimiser does with it, as long as every τ_i is equal.
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  task = task.with_train_spec(batch_size=8, num_epochs=2)
  server = lambda: algorithms.create_optimizer('adam', 0.05)
  rounds = fednova.FedNovaRounds(task, 0.05, server())
  fedavg = algorithms.create_learning_process('fedavg', task,
                                              algorithms.create_optimizer('sgd', 0.05), server())
  datasets = plan_lib.PlanDatasets(task)
  start = fedavg.set_model_weights(fedavg.initialize(), plan_lib.initial_model_weights(task, 1))
  for stragglers, close in ((0.0, True), (0.5, False)):
    planner = plan_lib.RoundPlanner(task, 4, faults.FaultConfig(straggler_fraction=stragglers),
                                    seed=3)
    nova_state = avg_state = start
    for r in range(1, 5):
      plan = planner.plan(r)
      out = rounds.next(nova_state, plan)
      nova_state = out.state
      avg_state = fedavg.next(avg_state, datasets(plan)).state
      steps = out.metrics['client_work']['fednova']
      if not stragglers:
        assert steps['min_local_steps'] == steps['max_local_steps'] > 1
    a = nova_state.global_model_weights.trainable
    b = avg_state.global_model_weights.trainable
    gap = max(float(np.abs(u - v).max()) for u, v in zip(a, b))
    if close:
      assert gap < 1e-6, gap
      for u, v in zip(tf.nest.flatten(nova_state.finalizer), tf.nest.flatten(avg_state.finalizer)):
        np.testing.assert_allclose(u, v, atol=1e-6)  # Adam's moments too
    else:
      assert gap > 1e-4, gap


def _config(tmp_path, name, rounds, **kwargs):
  return config_lib.ExperimentConfig(
      task='seed_linear', task_options={'iid': False}, algorithm='fednova', rounds=rounds,
      clients_per_round=4, eval_every=0, checkpoint_every=2, client_learning_rate=0.05,
      client_epochs=3, root_output_dir=str(tmp_path), experiment_name=name,
      progress=False, **kwargs)


def _final(tmp_path, name, rounds):
  cfg = _config(tmp_path, name, rounds)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_fednova_runs_from_the_loop_and_resumes_bit_identically(tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 6, straggler_fraction=0.5))
  loop.run_experiment(_config(tmp_path, 'resumed', 3, straggler_fraction=0.5))  # stops at 3 ...
  loop.run_experiment(_config(tmp_path, 'resumed', 6, straggler_fraction=0.5))  # ... resumes
  a, b = _final(tmp_path, 'straight', 6), _final(tmp_path, 'resumed', 6)
  for x, y in zip(a.state.global_model_weights.trainable, b.state.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)
  cfg = _config(tmp_path, 'straight', 6)
  start = plan_lib.initial_model_weights(loop.build_task(cfg), cfg.seed).trainable
  assert max(float(np.abs(u - v).max()) for u, v in zip(start, a.state.global_model_weights
                                                        .trainable)) > 1e-3  # it trained
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3', '4', '5', '6']
  taus = [(int(r['client_work/fednova/min_local_steps']),
           int(r['client_work/fednova/max_local_steps'])) for r in rows]
  assert any(lo < hi for lo, hi in taus)  # stragglers ran fewer steps in some round
  assert all(lo <= float(r['client_work/fednova/tau_eff']) <= hi
             for (lo, hi), r in zip(taus, rows))


@pytest.mark.parametrize('settings, message', [
    ({'client_optimizer': 'adam'}, 'normalises vanilla local SGD'),
    ({'aggregation': {'clip_norm': 1.0}}, 'normalised weighted mean'),
    ({'aggregation': {'secure_aggregation': True}}, 'normalised weighted mean'),
    ({'byzantine_fraction': 0.25}, 'does not simulate update attacks'),
    ({'simulation': 'vectorized'}, 'own rounds on --simulation=tff|fused, not '
     '--simulation=vectorized'),
])
def test_what_fednova_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    loop.run_experiment(_config(tmp_path, 'bad', 2, **settings))
  assert '\n' not in str(error.value)
  assert not (tmp_path / 'bad').exists()


def test_its_spec_is_stateless_weighted_and_not_in_graph():
  spec = algorithms.registry.get('fednova')
  assert spec.client_state == () and spec.weighted and not spec.runs_in_graph
  assert spec.build_runner is not None
  with pytest.raises(ValueError, match='weighting must be one of'):
    fednova.FedNovaRounds(tasks.create_task('seed_linear'), 0.1,
                          algorithms.create_optimizer('sgd', 1.0), weighting='uniform')
  with pytest.raises(ValueError, match='no stand-alone client work'):
    algorithms.registry.create_client_work('fednova', tasks.create_task('seed_linear'),
                                           algorithms.create_optimizer('sgd', 0.1))
