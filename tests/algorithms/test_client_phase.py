"""The shared client phase: per-client results in the clients' order, the local step applied."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import faults
from tff_lab import tasks
from tff_lab.algorithms import client_phase
from tff_lab.algorithms import registry
from tff_lab.algorithms import spec
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop


def test_per_client_results_follow_the_local_step_and_the_clients_order():
  task = tasks.create_task('seed_linear', {'num_clients': 4})
  task = task.with_train_spec(batch_size=1000, num_epochs=2, shuffle_buffer_size=1)
  weights = plan_lib.initial_model_weights(task, 0)
  lr, ids = 0.1, list(task.train_data.client_ids)
  data = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c)) for c in ids]
  plain = client_phase.build_client_phase(task, lr, spec.PLAIN_SGD)(weights, data)
  shift = [np.full_like(w, 0.5) for w in weights.trainable]
  corrected = client_phase.build_client_phase(task, lr, spec.LocalStep(
      lambda g, w, a, h, aux=None: tuple(x + c for x, c in zip(g, aux['correction']))),
      with_correction=True)(weights, [collections.OrderedDict(data=d, correction=shift)
                                      for d in data])
  for cid, p, c in zip(ids, plain, corrected):
    x = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(1000)))
    xs, ys = x['x'].numpy().astype(np.float64), x['y'].numpy().astype(np.float64).reshape(-1, 1)
    assert int(p['num_steps']) == 1 and int(p['num_examples']) == 2 * len(ys)  # 2 epochs, 1 batch
    theta = weights.trainable[0].astype(np.float64)
    grad = 2.0 / (2 * len(ys)) * np.vstack([xs, xs]).T @ (np.vstack([xs, xs]) @ theta
                                                          - np.vstack([ys, ys]))
    np.testing.assert_allclose(p['delta'][0], lr * grad, atol=1e-6)
    np.testing.assert_allclose(c['delta'][0], lr * (grad + 0.5), atol=1e-6)


def test_the_fused_client_phase_gives_the_tff_client_phases_results():
  # Uneven clients, short last batches, two epochs, stragglers with fewer steps, label flipping
  # and a per-client correction: what the packing and the per-client outputs must get right.
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 10, 'seed': 1})
  task = task.with_train_spec(batch_size=16, num_epochs=2)
  planner = plan_lib.RoundPlanner(task, 5, faults.FaultConfig(
      straggler_fraction=0.4, byzantine_fraction=0.2, attack='label_flip'), seed=3)
  plan = planner.plan(2)
  weights = plan_lib.initial_model_weights(task, 0)
  rng = np.random.default_rng(0)
  corrections = [[rng.normal(0, 0.01, np.shape(w)).astype(np.float32) for w in weights.trainable]
                 for _ in plan.client_ids]
  step = spec.LocalStep(lambda g, w, a, h, aux=None: tuple(
      x + h['scale'] * c + 0.1 * (wi - ai) for x, c, wi, ai in zip(g, aux['correction'], w, a)))
  results = {}
  for simulation in client_phase.SIMULATIONS:
    phase = client_phase.create_client_phase(simulation, task, 0.05, step, with_correction=True,
                                             hparams={'scale': 2.0})
    results[simulation] = phase(weights, plan, corrections)
    phase.close()
  assert len(results['fused']) == len(plan.client_ids) > 1
  steps = [int(r['num_steps']) for r in results['tff']]
  assert len(set(steps)) > 1  # stragglers took fewer steps
  for a, b in zip(results['tff'], results['fused']):
    for key in ('num_examples', 'num_steps'):
      assert int(a[key]) == int(b[key])
    np.testing.assert_allclose(float(a['loss_sum']), float(b['loss_sum']), rtol=1e-5)
    np.testing.assert_allclose(float(a['correct']), float(b['correct']))
    # Round-off (a different summation order) can flip a ReLU whose input is ~0 for one example
    # on one backend, which moves some elements of the next steps' deltas by ~1e-5 (seen in CI):
    # compare each client's whole delta in norm. A dropped, repeated or misplaced batch moves
    # it by a few percent; round-off, by ~1e-6 of its norm.
    x, y = (np.concatenate([np.ravel(d) for d in r['delta']]) for r in (a, b))
    assert np.linalg.norm(x - y) <= 1e-3 * np.linalg.norm(x)
    np.testing.assert_allclose(x, y, atol=1e-4)


_FUSED_RUNNERS = [n for n in registry.names() if registry.get(n).fused_runner]


def test_the_stateful_algorithms_run_fused():
  assert {'scaffold', 'fednova', 'feddyn'} <= set(_FUSED_RUNNERS)


@pytest.mark.parametrize('algorithm', _FUSED_RUNNERS)
def test_an_algorithms_own_rounds_on_fused_equal_its_rounds_on_tff(tmp_path, algorithm):
  """Every algorithm whose runner runs fused, end to end through the loop, client store too."""
  def run(simulation):
    config = config_lib.ExperimentConfig(
        task='digits', task_options={'model': 'mlp', 'num_clients': 8, 'seed': 2},
        algorithm=algorithm, rounds=3, clients_per_round=4, client_epochs=2,
        client_batch_size=16, client_learning_rate=0.05, straggler_fraction=0.25,
        eval_every=0, checkpoint_every=3, simulation=simulation, root_output_dir=str(tmp_path),
        experiment_name=simulation, progress=False)
    summary = loop.run_experiment(config)
    task = loop.build_task(config)
    template = loop.build_process(config, task).initialize()
    saved = checkpoint.read_checkpoint(str(tmp_path / simulation / 'checkpoints'), 3, template)
    return summary, saved.state, saved.extra.get('client_store')

  def assert_close(a, b):
    # Two op orders' float32 round-off (oneDNN's kernels differ by CPU): on an AVX-512 machine a
    # few ReLU units flip for some examples, and SCAFFOLD's control variates Δ/(Kη) amplify
    # those few elements (0.15% of one layer's off by up to 4% of its scale, seen). So the
    # test is on the whole array: ‖a − b‖ ≤ 1% of ‖a‖. A wrong correction or state update
    # moves an array by about its own norm.
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.linalg.norm(a - b) <= 1e-2 * np.linalg.norm(a) + 1e-7, (
        np.linalg.norm(a - b), np.linalg.norm(a))

  (s_tff, tff_state, tff_store), (s_fused, fused_state, fused_store) = run('tff'), run('fused')
  for a, b in zip(tff_state.global_model_weights.trainable,
                  fused_state.global_model_weights.trainable):
    assert_close(a, b)
  np.testing.assert_allclose(s_tff['final_metrics']['train_loss'],
                             s_fused['final_metrics']['train_loss'], rtol=1e-4)
  assert (tff_store is None) == (fused_store is None)
  if tff_store is not None:  # the same clients' state, and the server's
    assert tff_store['client_ids'] == fused_store['client_ids']
    assert tff_store['client_ids'] or tff_store['server']  # AFL keeps only a server part
    for x, y in zip(tf.nest.flatten(tff_store), tf.nest.flatten(fused_store)):
      if isinstance(x, np.ndarray):
        assert_close(x, y)


def test_read_results_totals_every_client_and_marks_the_unusable():
  rng = np.random.default_rng(3)
  finite = [rng.normal(size=(2, 3)), rng.normal(size=3)]
  results = [
      collections.OrderedDict(delta=finite, num_examples=7, num_steps=2, loss_sum=1.5, correct=4),
      collections.OrderedDict(delta=[np.full((2, 3), np.nan), np.zeros(3)], num_examples=5,
                              num_steps=1, loss_sum=np.inf, correct=1),
      collections.OrderedDict(delta=[np.zeros((2, 3)), np.zeros(3)], num_examples=0,
                              num_steps=0, loss_sum=0.0, correct=0)]
  read, totals = client_phase.read_results(results)
  assert [r.usable for r in read] == [True, False, False]  # diverged; no step taken
  assert [r.num_steps for r in read] == [2, 1, 0] and [r.num_examples for r in read] == [7, 5, 0]
  assert all(d.dtype == np.float32 for r in read for d in r.delta)
  np.testing.assert_array_equal(read[0].delta[0], finite[0].astype(np.float32))
  np.testing.assert_array_equal(totals[1:], [5, 12, 3])  # correct, examples, steps of all three
  assert totals[0] == np.inf  # the diverged client's loss is in the totals, as TFF's metrics
