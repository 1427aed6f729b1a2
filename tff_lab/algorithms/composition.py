"""Composing a learning process around tff_lab's client work.

The same four parts as TFF's `build_weighted_fed_avg` / `build_weighted_fed_prox`
(`tensorflow_federated/python/learning/algorithms/fed_avg.py`): broadcast the global weights, run
the client work, aggregate the deltas with a weighted `tff.aggregators` factory (its weights are
the client work's `update_weight`: example counts, or 1 for unweighted averaging), and apply the
aggregate with the server optimiser. Only the client work differs; see `client_work.py`.

With `state_only` the process serves only for its state (the in-graph backends run the rounds
themselves): its client work is `client_work.build_state_only_client_work`'s stand-in and its
finalizer `build_state_only_finalizer`'s, which keep the state and types of the real parts but
trace no training and no optimiser step, and `next` refuses to run (`StateOnlyProcess`).
"""

from typing import Optional

import numpy as np
import tensorflow_federated as tff

from tff_lab.tasks import task as task_lib


def compose_with_client_work(task: task_lib.Task,
                             client_work: tff.learning.templates.ClientWorkProcess,
                             server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                             model_aggregator=None, state_only: bool = False,
                             ) -> tff.learning.templates.LearningProcess:
  """Returns the learning process broadcast → `client_work` → aggregate → server optimiser.

  Args:
    task: The task whose model is trained.
    client_work: A `ClientWorkProcess` over the task's model weights.
    server_optimizer: Applies the aggregated delta; SGD with rate 1.0 by default.
    model_aggregator: A weighted `tff.aggregators` factory; `tff.aggregators.MeanFactory()` by
      default.
    state_only: `client_work` is a state-only stand-in: the finalizer is one too, and the
      result a `StateOnlyProcess` (see the module docstring).
  """
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(task.tff_model_fn())

  weights_type = initial_model_weights_fn.type_signature.result
  distributor = tff.learning.templates.build_broadcast_process(weights_type)
  aggregator = (model_aggregator or tff.aggregators.MeanFactory()).create(
      weights_type.trainable, tff.TensorType(np.float32))
  if state_only:
    finalizer = build_state_only_finalizer(server_optimizer, weights_type)
  else:
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer,
                                                                       weights_type)
  process = tff.learning.templates.compose_learning_process(
      initial_model_weights_fn, distributor, client_work, aggregator, finalizer)
  if not state_only:
    return process
  return StateOnlyProcess(process.initialize, process.next, process.get_model_weights,
                          process.set_model_weights, get_hparams_fn=process.get_hparams,
                          set_hparams_fn=process.set_hparams)


def build_state_only_finalizer(optimizer: tff.learning.optimizers.Optimizer, weights_type
                               ) -> tff.learning.templates.FinalizerProcess:
  """`build_apply_optimizer_finalizer(optimizer, weights_type)`'s state, hparams and types,
  with a `next` that keeps the weights: its optimiser step (an autograph-converted
  `tf.function`, most of the process's build time once the client work is a stand-in) is
  never traced. For `StateOnlyProcess`es, whose backends apply the server step themselves
  (`tff_lab.simulation.server.apply_server_update`)."""

  @tff.tensorflow.computation
  def init_tf():  # as TFF's finalizer initialises its optimiser
    return optimizer.initialize(tff.types.type_to_tf_tensor_specs(weights_type.trainable))

  @tff.federated_computation
  def init_fn():
    return tff.federated_eval(init_tf, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(weights_type.trainable, tff.SERVER))
  def next_fn(state, weights, update):
    del update
    return tff.templates.MeasuredProcessOutput(state, weights, tff.federated_value((), tff.SERVER))

  get_hparams_fn = tff.tensorflow.computation(optimizer.get_hparams, state_type)
  set_hparams_fn = tff.tensorflow.computation(optimizer.set_hparams, state_type,
                                              get_hparams_fn.type_signature.result)
  return tff.learning.templates.FinalizerProcess(init_fn, next_fn, get_hparams_fn=get_hparams_fn,
                                                 set_hparams_fn=set_hparams_fn)


class StateOnlyProcess(tff.learning.templates.LearningProcess):
  """A learning process that serves only for its state: `initialize`, `get_model_weights`,
  `set_model_weights`, the hparams computations and the state's structure (checkpoints), for
  backends that run the rounds themselves (`--simulation=fused|vectorized`). Its client work is
  a stand-in (`client_work.build_state_only_client_work`), so `next` refuses to run."""

  @property
  def next(self):
    raise RuntimeError('this learning process serves only for the state (its client work trains '
                       'nothing): its rounds run on an in-graph backend; build it without '
                       'state_only to call next')

