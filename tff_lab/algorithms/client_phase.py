"""One TFF call that trains every client of a round and hands each client's result back to Python.

Algorithms whose server step needs per-client quantities (SCAFFOLD's control variates, FedNova's
local step counts) cannot use `process.next`, which returns only aggregates. Their runners call
`build_client_phase(...)` instead: it broadcasts the global weights and runs, in client-placed
TensorFlow, each client's local SGD with the algorithm's `LocalStep` (`tff_lab.algorithms.spec`),
returning per client

    OrderedDict(delta=x − y (TFF's update convention, one array per trainable variable),
                num_examples, num_steps, loss_sum, correct)

which TFF 0.87's execution context hands to Python as a list in the clients' order (as
`tff_lab.algorithms.secure_rounds` relies on too). The runner then does its arithmetic in NumPy
and applies the server step every backend shares (`tff_lab.simulation.server`).

With `with_correction`, each client's input is `OrderedDict(data=<dataset>, correction=<arrays
shaped like the trainable weights>)`, and the local step reads the correction as
`aux['correction']` (SCAFFOLD's c − c_i); otherwise it is the dataset alone.

Runners do not call it directly: `create_client_phase(simulation, ...)` gives a callable
`phase(weights, plan, corrections=None) -> list` for the backend, `TffClientPhase` (this TFF call
on the plan's datasets) on `tff` and `tff_lab.algorithms.vectorized.FusedClientPhase` (every
client in one TF program, packed by example index) on `fused`, with the same results to float32
round-off. The algorithm's arithmetic is then written once for both backends.
"""

import collections
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.algorithms import spec as spec_lib
from tff_lab.algorithms import vectorized
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.simulation import plan as plan_lib
from tff_lab.tasks import task as task_lib


def _client_update_fn(task: task_lib.Task, learning_rate: float, local_step: spec_lib.LocalStep,
                      hparams: dict):
  """A client's local SGD steps over its dataset, as a `tf.function` over a TFF model."""
  model = task.tff_model_fn()
  kind = task.prediction_kind

  @tf.function
  def client_update(initial_weights, data, correction=None):
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
    trainable = tuple(tf.nest.flatten(weights.trainable))
    anchor = tuple(tf.nest.flatten(initial_weights.trainable))
    aux = None if correction is None else {'correction': tuple(tf.nest.flatten(correction))}

    def step(totals, batch):
      num_examples, num_steps, loss_sum, correct = totals
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
      grads = tape.gradient(output.loss, trainable,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
      direction = local_step.gradient(grads, trainable, anchor, hparams, aux=aux)
      for var, d in zip(trainable, direction):
        var.assign_sub(learning_rate * d)
      n = tf.cast(output.num_examples, tf.float32)
      hits = tf.reduce_sum(accuracy_lib.correct_predictions(kind, batch['y'], output.predictions))
      return (num_examples + tf.cast(output.num_examples, tf.int64), num_steps + 1,
              loss_sum + tf.cast(output.loss, tf.float32) * n, correct + hits)

    totals = data.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64),
                          tf.constant(0.0), tf.constant(0.0)), step)
    delta = [a - b for a, b in zip(anchor, trainable)]  # x − y, TFF's update convention
    return collections.OrderedDict(delta=delta, num_examples=totals[0], num_steps=totals[1],
                                   loss_sum=totals[2], correct=totals[3])

  return client_update


def build_client_phase(task: task_lib.Task, learning_rate: float,
                       local_step: spec_lib.LocalStep, with_correction: bool = False,
                       hparams: Optional[dict] = None):
  """The round's client phase (see the module docstring): `(weights, client_inputs) -> list`.

  Args:
    task: The task trained.
    learning_rate: η_l of the clients' SGD.
    local_step: The algorithm's local step.
    with_correction: Clients take `OrderedDict(data=, correction=)` (see the module docstring).
    hparams: The local step's hyperparameters (e.g. FedDyn's α).
  """
  hparams = dict(hparams or {})
  with tf.Graph().as_default():
    model = task.tff_model_fn()
  weights_type = tff.learning.models.weights_type_from_model(model)
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  learning_rate = float(learning_rate)
  if with_correction:
    input_type = tff.StructWithPythonType(
        [('data', dataset_type), ('correction', weights_type.trainable)], collections.OrderedDict)

    @tff.tensorflow.computation(weights_type, input_type)
    def client_update(weights, client_input):
      return _client_update_fn(task, learning_rate, local_step, hparams)(
          weights, client_input['data'], client_input['correction'])
  else:
    input_type = dataset_type

    @tff.tensorflow.computation(weights_type, input_type)
    def client_update(weights, data):
      return _client_update_fn(task, learning_rate, local_step, hparams)(weights, data)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(input_type, tff.CLIENTS))
  def client_phase(weights, client_inputs):
    return tff.federated_map(client_update, (tff.federated_broadcast(weights), client_inputs))

  return client_phase


class TffClientPhase:
  """The `tff` backend's client phase: `build_client_phase` on the plan's datasets."""

  def __init__(self, task: task_lib.Task, learning_rate: float, local_step: spec_lib.LocalStep,
               with_correction: bool = False, hparams: Optional[dict] = None):
    self._phase = build_client_phase(task, learning_rate, local_step, with_correction, hparams)
    self._datasets = plan_lib.PlanDatasets(task)
    self._with_correction = with_correction

  def __call__(self, weights: Any, plan, corrections: Optional[Sequence[Any]] = None
               ) -> list:
    """Each reporting client's result, in the plan's order (`corrections`: one per client)."""
    datasets = self._datasets(plan)
    if self._with_correction:
      datasets = [collections.OrderedDict(data=ds, correction=c)
                  for ds, c in zip(datasets, corrections)]
    return self._phase(weights, datasets)

  def close(self) -> None:
    pass


SIMULATIONS = ('tff', 'fused')  # the backends a client phase runs on


def create_client_phase(simulation: str, task: task_lib.Task, learning_rate: float,
                        local_step: spec_lib.LocalStep, with_correction: bool = False,
                        hparams: Optional[dict] = None):
  """The client phase of `--simulation=<simulation>` (see the module docstring)."""
  if simulation == 'fused':
    return vectorized.FusedClientPhase(task, learning_rate, local_step, with_correction, hparams)
  if simulation == 'tff':
    return TffClientPhase(task, learning_rate, local_step, with_correction, hparams)
  raise ValueError(f'a client phase runs on --simulation={"|".join(SIMULATIONS)}, not '
                   f'{simulation!r}')


class ClientResult(collections.namedtuple(
    'ClientResult', ['delta', 'num_steps', 'num_examples', 'usable'])):
  """One client's result of a client phase, in NumPy.

  Attributes:
    delta: x − y, one float32 array per trainable variable.
    num_steps / num_examples: Its local steps and the examples they processed.
    usable: It took a step and its delta is finite. A runner skips a client that is not: it
      contributes nothing to the round and keeps its client state (as FedAvg gives it weight 0).
  """


def read_results(results: Sequence[Any]) -> tuple[list[ClientResult], Any]:
  """The phase's per-client results as `ClientResult`s, and the round's training totals.

  Returns:
    (results, totals): totals is `[loss_sum, correct, num_examples, num_steps]` over every
    client, usable or not, for `tff_lab.simulation.server.train_metrics(*totals)`.
  """
  out, totals = [], np.zeros(4)
  for result in results:
    delta = [np.asarray(d, np.float32) for d in result['delta']]
    steps, n = int(result['num_steps']), int(result['num_examples'])
    totals += [float(result['loss_sum']), float(result['correct']), n, steps]
    out.append(ClientResult(delta, steps, n,
                            steps > 0 and all(np.all(np.isfinite(d)) for d in delta)))
  return out, totals
