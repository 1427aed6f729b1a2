"""The in-graph paths with client optimisers other than SGD give the TFF path's states.

Each client's optimiser state starts fresh each round (`initialize`), is carried through its
local steps, and takes the local step's direction as its gradient, exactly as
`tff_lab.algorithms.client_work` does; both client loops are compared with the TFF path (same
seed, same plans) to float32 round-off, as `tests/algorithms/test_vectorized.py` does for SGD.
"""

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import faults
from tff_lab import tasks
from tff_lab.algorithms import registry
from tff_lab.algorithms import schedules
from tff_lab.algorithms import spec as spec_lib
from tff_lab.algorithms import vectorized
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop

# Adam's default ε = 1e-7 turns ulp-level differences of a near-zero gradient coordinate into
# steps of order η (a/(√p + ε) ≈ ±1 whatever |g|): with it a few of the MLP's 53k weights
# differ by up to 3e-4 after two FedProx rounds, on both loops alike. ε = 1e-4 keeps the division
# well conditioned, and the paths then agree to 3e-8, so the comparison can be tight.
_ADAM = {'epsilon': 1e-4}
# (optimiser, client rate, hyperparameters): every client optimiser but plain SGD.
_OPTIMIZERS = [
    ('sgdm', 0.05, {'momentum': 0.9}),
    ('adam', 0.01, _ADAM),
    ('adagrad', 0.05, {}),
    # Yogi's normalised step is large at η = 0.01 here: a 1e-7 change of the start weights then
    # moves a client's result by 1e-3 (a ReLU kink crossed), on either path; η = 0.003 does not.
    ('yogi', 0.003, {}),
]
_ROUNDS = 2


def _task():
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 8, 'seed': 1})
  return task.with_train_spec(batch_size=16, num_epochs=1)


def _assert_states_close(a, b):
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)


def _compare_with_tff(name, optimizer, lr, hparams, rates=None):
  """Runs `_ROUNDS` rounds on the TFF path and on both in-graph client loops from one state.

  `rates`: with a client learning-rate schedule, each round's client rate (set in the state).
  """
  tf.random.set_seed(0)
  task = _task()
  client_opt = algorithms.create_optimizer(optimizer, lr, **hparams)
  server_opt = algorithms.create_optimizer('sgd', 1.0)
  spec = registry.get(name)
  algorithm_hparams = {'mu': 0.5} if name == 'fedprox' else None
  process = algorithms.create_learning_process(
      name, task, client_opt, server_opt, hparams=algorithm_hparams,
      scheduled_client_lr=None if rates is None else rates[0])
  loops = {loop_name: vectorized.VectorizedRounds(
      task, lr, server_opt, hparams=algorithm_hparams,
      weighted=spec.weighted, client_loop=loop_name, local_step=spec.local_step,
      client_optimizer=client_opt) for loop_name in vectorized.CLIENT_LOOPS}
  initial = process.set_model_weights(process.initialize(),
                                      plan_lib.initial_model_weights(task, 0))
  states = {'tff': initial, **{loop_name: initial for loop_name in loops}}
  # Stragglers give clients unequal steps (the vectorized loop's padding must not step).
  planner = plan_lib.RoundPlanner(task, 5, faults.FaultConfig(straggler_fraction=0.4), seed=0)
  for r in range(1, _ROUNDS + 1):
    if rates is not None:
      states = {k: schedules.with_rates(s, rates[r - 1], None) for k, s in states.items()}
    plans = list(planner.plan(r).clients)
    tff_out = process.next(states['tff'], faults.materialize_client_inputs(task, plans, 10))
    states['tff'] = tff_out.state
    for loop_name, rounds in loops.items():
      out = rounds.next(states[loop_name], plans)
      states[loop_name] = out.state
      a, b = tff_out.metrics['client_work']['train'], out.metrics['client_work']['train']
      assert (a['num_examples'], a['num_batches']) == (b['num_examples'], b['num_batches'])
      assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)
  for loop_name, rounds in loops.items():
    _assert_states_close(states['tff'], states[loop_name])
    rounds.close()
  assert not np.allclose(states['tff'].global_model_weights.trainable[0],
                         initial.global_model_weights.trainable[0])
  return states


@pytest.mark.parametrize('optimizer, lr, hparams', _OPTIMIZERS)
def test_rounds_match_tff_path(optimizer, lr, hparams):
  _compare_with_tff('fedavg', optimizer, lr, hparams)


def test_fedprox_with_adam_matches_tff_path():
  _compare_with_tff('fedprox', 'adam', 0.01, _ADAM)


def test_scheduled_client_rate_with_adam_matches_tff_path():
  # The round's rate (the client work's state) replaces Adam's learning rate on both paths.
  _compare_with_tff('fedavg', 'adam', 0.01, _ADAM, rates=[0.02, 0.005])


def _ops(graph_def):
  """The program's ops: the graph's and each loop body's, by type (names carry counters)."""
  return (sorted(n.op for n in graph_def.node),
          sorted(sorted(n.op for n in f.node_def) for f in graph_def.library.function))


@pytest.mark.parametrize('client_loop', vectorized.CLIENT_LOOPS)
def test_plain_sgd_keeps_the_sgd_program(client_loop):
  # SGD without momentum as `client_optimizer` builds the same program as the default (no
  # optimiser state in the loops); SGD with momentum does not.
  task = tasks.create_task('seed_linear')
  server_opt = algorithms.create_optimizer('sgd', 1.0)
  ops = []
  for client_opt in (None, algorithms.create_optimizer('sgd', 0.1),
                     algorithms.create_optimizer('sgdm', 0.1, momentum=0.9)):
    rounds = vectorized.VectorizedRounds(task, 0.1, server_opt, client_loop=client_loop,
                                         client_optimizer=client_opt)
    ops.append(_ops(rounds._program.graph.as_graph_def()))
    rounds.close()
  assert ops[0] == ops[1] and ops[0] != ops[2]


def test_fused_client_phase_with_adam_matches_tff_client_work():
  # The aggregating fused path's client phase: each client's delta equals the TFF client work's.
  tf.random.set_seed(0)
  task = _task()
  client_opt = algorithms.create_optimizer('adam', 0.01, **_ADAM)
  phase = vectorized.FusedClientPhase(task, 0.01, spec_lib.PROXIMAL_SGD, hparams={'mu': 0.5},
                                      client_optimizer=client_opt)
  process = algorithms.create_learning_process(
      'fedprox', task, client_opt, algorithms.create_optimizer('sgd', 1.0), hparams={'mu': 0.5})
  weights = plan_lib.initial_model_weights(task, 0)
  plan = plan_lib.RoundPlanner(task, 3, faults.FaultConfig(straggler_fraction=0.4),
                               seed=0).plan(1)
  results = phase(weights, plan)
  datasets = faults.materialize_client_inputs(task, list(plan.clients), 10)
  for result, dataset in zip(results, datasets):
    state = process.set_model_weights(process.initialize(), weights)
    tff_delta = state.global_model_weights.trainable  # one client, server SGD at rate 1:
    new = process.next(state, [dataset]).state.global_model_weights.trainable
    for d, w0, w1 in zip(result['delta'], tff_delta, new):
      np.testing.assert_allclose(d, np.asarray(w0) - np.asarray(w1), atol=1e-5, rtol=1e-5)
  phase.close()


def test_client_rate_must_be_the_optimizers():
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match="learning rate 0.5 is not the client rate 0.1"):
    vectorized.FusedClientPhase(task, 0.1, spec_lib.PLAIN_SGD,
                                client_optimizer=algorithms.create_optimizer('adam', 0.5))


def test_in_graph_backends_accept_client_optimizers():
  vectorized.check_supported('adam', model_aggregator_is_default=True, update_attacks=False)
  for simulation in ('fused', 'vectorized'):
    config_lib.ExperimentConfig(simulation=simulation, client_optimizer='yogi',
                                client_learning_rate=0.01).validate()


@pytest.mark.parametrize('aggregation', [{}, {'clip_norm': 0.5}])
def test_fused_backend_end_to_end(tmp_path, aggregation):
  # Through `_build_in_graph`: the plain mean (VectorizedRounds) and the aggregator stack
  # (FusedClientPhase) run the config's client optimiser, as the tff backend does.
  def config(simulation):
    return config_lib.ExperimentConfig(
        task='seed_linear', rounds=_ROUNDS, clients_per_round=4, eval_every=0,
        checkpoint_every=1, root_output_dir=str(tmp_path), experiment_name=simulation,
        progress=False, simulation=simulation, aggregation=dict(aggregation),
        client_optimizer='sgdm', client_learning_rate=0.05,
        client_optimizer_hparams={'momentum': 0.9})
  configs = {sim: config(sim) for sim in ('tff', 'fused')}
  for c in configs.values():
    c.validate()
    loop.run_experiment(c)
  task = loop.build_task(configs['tff'])
  template = loop.build_process(configs['tff'], task).initialize()
  states = [checkpoint.load_checkpoint(str(tmp_path / sim / 'checkpoints'), _ROUNDS, template)
            for sim in configs]
  for a, b in zip(states[0].global_model_weights.trainable,
                  states[1].global_model_weights.trainable):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
