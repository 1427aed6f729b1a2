"""FedRep and FedPer: a shared body (representation) and a personal head per client.

FedRep: Collins, Hassani, Mokhtari, Shakkottai, "Exploiting Shared Representations for
Personalized Federated Learning", ICML 2021 (arXiv:2102.07078), Algorithm 1. FedPer:
Arivazhagan, Aggarwal, Singh, Choudhary, "Federated Learning with Personalization Layers", 2019
(arXiv:1912.00818). The model's layers are split into a body φ, which the server averages, and
a head h_k, which stays on client k. A round t with sampled clients S_t is

    FedRep, client k:  h ← h_k (the global model's head when k is first seen);
                       τ_h = fedrep_head_epochs epochs:  h ← h − η·∇_h F_k(φᵗ, h)   (body fixed)
                       φ ← φᵗ;  client_epochs epochs:    φ ← φ − η·∇_φ F_k(φ, h)    (head fixed)
    FedPer, client k:  (φ, h) ← (φᵗ, h_k);  client_epochs epochs of SGD on both jointly
    both:              keeps h_k ← h; sends Δ_k = φᵗ − φ (TFF's convention)
    server:            φᵗ⁺¹ ← server_optimizer(φᵗ, mean_k Δ_k)

with η the client learning rate. FedRep's mean is uniform (the paper's 1/|S_t| Σ), FedPer's is
weighted by the examples each client processed (FedAvg's, as the FedPer paper's). The server's
copy of the head is never updated (its pseudo-gradient is 0): it is the initial head, which each
client's h_k starts from.

The split. `head_layers=k` makes the last k layers that hold trainable weights the head;
`head_layer_name=<name>` makes that layer and every later layer with weights the head (it takes
precedence); names are those of the model built in a fresh graph (`canonical_model`: Keras'
automatic names, `dense`, `dense_1`, ..., or the task's own), as the one-line error for a wrong
name lists them. A split that names no layer, or leaves the body empty, is refused in one line
(`check`, before tracing; it builds the task's model to read its layers).

How it runs here: like Ditto (`tff_lab.algorithms.ditto`), the heads live in the engine's client
store (state `head`: the head's trainable arrays), which checkpoints carry, so resume is exact. A
round is one TFF call (broadcast, then per client the local SGD above in client-placed
TensorFlow, returning its body delta and new head in the clients' order), the mean in NumPy and
the server step every backend shares (`tff_lab.simulation.server`). Personalised models for the
per-client report (`tff_lab.evaluation.personalization`) are the global body with client k's
head (the global head for a client never sampled). A client with no batch, or a non-finite
update, contributes nothing and keeps its head.

Scope: the `tff` backend; client SGD; the plain mean (no clipping, DP, robust rules, compression
or secure aggregation); no update attacks; trainable weights only (non-trainable ones, e.g.
batch-norm statistics, are the global model's). The rest is refused before tracing (`check`).
FedBN (`tff_lab.algorithms.fedbn`) runs these rounds as FedPer's, with the batch-norm layers'
variables, non-trainable ones included, as the personal part (`masks`).
"""

import collections
import dataclasses
import functools
import json
from typing import Any, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.algorithms import fedavg
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.simulation import plan as plan_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib

STATE = 'head'
VARIANTS = ('fedrep', 'fedper')


def canonical_model(task: task_lib.Task) -> tf.keras.Model:
  """The task's model built in a fresh graph, so that Keras' automatic layer names (`dense`,
  `dense_1`, ...) do not depend on the models built before it: the names `head_layer_name`
  refers to. (Like any model made in a TF1 graph, it invalidates Keras models made earlier; the
  training loop builds its own after the algorithm's runner.)"""
  with tf.Graph().as_default():
    return task.model_fn()


def weighted_layers(model: tf.keras.Model) -> list[tuple[str, int]]:
  """The model's layers that hold trainable weights, in order: (name, number of variables).

  Their variables, concatenated in this order, are `model.trainable_variables`.
  """
  layers = [(layer.name, len(layer.trainable_weights)) for layer in model.layers
            if layer.trainable_weights]
  if sum(n for _, n in layers) != len(model.trainable_variables):
    raise ValueError(f'model {model.name!r}: its layers\' trainable weights are not its '
                     'trainable variables (nested models are not supported by the head split)')
  return layers


def head_mask(model: tf.keras.Model, head_layers: int = 1, head_layer_name: str = ''
              ) -> list[bool]:
  """Per trainable variable of `model`, whether it is in the head (see the module docstring).

  Raises:
    ValueError: One line, for a name that is no layer with weights, or a split that leaves no
      body or no head.
  """
  return split_layers(weighted_layers(model), model.name, head_layers, head_layer_name)


def split_layers(layers: Sequence[tuple[str, int]], model_name: str, head_layers: int = 1,
                 head_layer_name: str = '') -> list[bool]:
  """`head_mask` from the model's `weighted_layers`."""
  names = [name for name, _ in layers]
  if head_layer_name:
    if head_layer_name not in names:
      raise ValueError(f'head_layer_name={head_layer_name!r} names no layer with trainable '
                       f'weights of model {model_name!r}; its layers: {names}')
    first = names.index(head_layer_name)
  else:
    if not isinstance(head_layers, int) or head_layers < 1:
      raise ValueError(f'head_layers must be an integer >= 1, got {head_layers!r}')
    first = len(names) - head_layers
  if first <= 0:
    what = (f'head_layer_name={head_layer_name!r}' if head_layer_name
            else f'head_layers={head_layers}')
    raise ValueError(f'{what} takes all {len(names)} layers of model {model_name!r} into the '
                     f'head: the shared body needs at least one (its layers: {names})')
  return [i >= first for i, (_, n) in enumerate(layers) for _ in range(n)]


def initial_store(task: task_lib.Task) -> client_store_lib.ClientStore:
  """A store where no client holds a head yet (each starts from the global head when first seen)."""
  del task
  return client_store_lib.ClientStore(collections.OrderedDict)


def personal_model_weights(global_weights: tff.learning.models.ModelWeights,
                           store: client_store_lib.ClientStore, client_id: str,
                           mask: Sequence[bool], non_trainable_mask: Sequence[bool] = ()
                           ) -> tff.learning.models.ModelWeights:
  """Client `client_id`'s model: the global body and its head (the global one if never sampled).

  The head is the trainable variables `mask` selects, then the non-trainable ones
  `non_trainable_mask` selects (none by default), in that order.
  """
  if client_id not in store:
    return global_weights
  head = iter(store.get(client_id)[STATE])
  trainable = [next(head) if in_head else w for w, in_head in zip(global_weights.trainable, mask)]
  non_trainable = list(global_weights.non_trainable)
  for i, in_head in enumerate(non_trainable_mask):
    non_trainable[i] = next(head) if in_head else non_trainable[i]
  return tff.learning.models.ModelWeights(trainable=trainable, non_trainable=non_trainable)


def _sgd(model, variables, trainable, data, learning_rate, kind):
  """Local SGD of `variables` (a subset of `trainable`) over `data`; returns the metric sums."""
  index = [i for i, v in enumerate(trainable) if any(v is u for u in variables)]

  def step(totals, batch):
    num_examples, num_steps, loss_sum, correct = totals
    with tf.GradientTape() as tape:
      output = model.forward_pass(batch, training=True)
    grads = tape.gradient(output.loss, [trainable[i] for i in index],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    for i, g in zip(index, grads):
      trainable[i].assign_sub(learning_rate * g)
    n = tf.cast(output.num_examples, tf.float32)
    hits = tf.reduce_sum(accuracy_lib.correct_predictions(kind, batch['y'], output.predictions))
    return (num_examples + tf.cast(output.num_examples, tf.int64), num_steps + 1,
            loss_sum + tf.cast(output.loss, tf.float32) * n, correct + hits)

  return data.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64), tf.constant(0.0),
                      tf.constant(0.0)), step)


def build_client_phase(task: task_lib.Task, learning_rate: float, mask: Sequence[bool],
                       variant: str, non_trainable_mask: Sequence[bool] = ()):
  """The round's client phase: `(weights, [OrderedDict(head_data=, data=, head=)]) -> list`.

  Per client: `OrderedDict(delta=φᵗ − φ (0 for the head's variables), head=new head,
  num_examples, num_steps, loss_sum, correct)` of its body phase (FedPer: its joint phase), in
  the clients' order. `head_data` is only read by FedRep's head phase. The head is the trainable
  variables `mask` selects, then the non-trainable ones `non_trainable_mask` selects (none by
  default; their values are the client's, e.g. batch-norm statistics its training updates).
  """
  if variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
  with tf.Graph().as_default():
    model = task.tff_model_fn()
  weights_type = tff.learning.models.weights_type_from_model(model)
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  head_type = ([t for t, in_head in zip(weights_type.trainable, mask) if in_head]
               + [t for t, p in zip(weights_type.non_trainable, non_trainable_mask) if p])
  input_type = tff.StructWithPythonType(
      [('head_data', dataset_type), ('data', dataset_type), ('head', head_type)],
      collections.OrderedDict)
  learning_rate = float(learning_rate)
  kind = task.prediction_kind
  mask, non_trainable_mask = list(mask), list(non_trainable_mask)

  @tff.tensorflow.computation(weights_type, input_type)
  def client_update(global_weights, client_input):
    model = task.tff_model_fn()

    @tf.function
    def update(global_weights, head_data, data, head):
      weights = tff.learning.models.ModelWeights.from_model(model)
      tf.nest.map_structure(lambda v, t: v.assign(t), weights, global_weights)
      trainable = list(tf.nest.flatten(weights.trainable))
      anchor = list(tf.nest.flatten(global_weights.trainable))
      head_vars = [v for v, in_head in zip(trainable, mask) if in_head]
      body_vars = [v for v, in_head in zip(trainable, mask) if not in_head]
      personal = head_vars + [v for v, p in zip(tf.nest.flatten(weights.non_trainable),
                                                non_trainable_mask) if p]
      for var, value in zip(personal, tf.nest.flatten(head)):
        var.assign(value)
      if variant == 'fedrep':
        _sgd(model, head_vars, trainable, head_data, learning_rate, kind)  # body fixed
        totals = _sgd(model, body_vars, trainable, data, learning_rate, kind)  # head fixed
      else:
        totals = _sgd(model, trainable, trainable, data, learning_rate, kind)
      delta = [tf.zeros_like(a) if in_head else a - v
               for a, v, in_head in zip(anchor, trainable, mask)]
      return collections.OrderedDict(
          delta=delta, head=[tf.identity(v) for v in personal], num_examples=totals[0],
          num_steps=totals[1], loss_sum=totals[2], correct=totals[3])

    return update(global_weights, client_input['head_data'], client_input['data'],
                  client_input['head'])

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(input_type, tff.CLIENTS))
  def client_phase(weights, client_inputs):
    return tff.federated_map(client_update, (tff.federated_broadcast(weights), client_inputs))

  return client_phase


class FedRepRounds:
  """FedRep or FedPer rounds on the `tff` backend, advancing the state of a FedAvg process."""

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               server_optimizer: tff.learning.optimizers.Optimizer,
               store: client_store_lib.ClientStore, variant: str = 'fedrep',
               head_layers: int = 1, head_layer_name: str = '', head_epochs: int = 1,
               masks: Optional[tuple[Sequence[bool], Sequence[bool]]] = None, name: str = ''):
    """Builds the round's TFF computation (tracing).

    Args:
      task: The task trained.
      client_learning_rate: η of the local SGD.
      server_optimizer: Applies the mean body delta.
      store: The client store (the head h_k of every client sampled).
      variant: `fedrep` (head, then body; uniform mean) or `fedper` (jointly; weighted mean).
      head_layers / head_layer_name: The split (see the module docstring).
      head_epochs: FedRep's τ_h, epochs of the head phase (FedPer ignores it).
      masks: `(trainable, non_trainable)` masks of the personal variables, instead of the head
        split (FedBN's batch-norm variables).
      name: The round metrics' name (default: the variant).
    """
    if variant not in VARIANTS:
      raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
    if variant == 'fedrep' and not (isinstance(head_epochs, int) and head_epochs >= 1):
      raise ValueError(f'fedrep_head_epochs must be an integer >= 1, got {head_epochs!r}')
    self.mask, self.non_trainable_mask = (
        (list(masks[0]), list(masks[1])) if masks is not None
        else (head_mask(canonical_model(task), head_layers, head_layer_name), []))
    self.variant = variant
    self._name = name or variant
    self._server_optimizer = server_optimizer
    self.store = store
    self._client_phase = build_client_phase(task, client_learning_rate, self.mask, variant,
                                            self.non_trainable_mask)
    self._datasets = plan_lib.PlanDatasets(task)
    self._head_epochs = head_epochs if variant == 'fedrep' else 1

  def _head_plan(self, plan):
    """The plan of FedRep's head phase: each client's local work with τ_h epochs (the rest of its
    ClientSpec, a straggler's cap included, as planned). FedPer never reads it."""
    return dataclasses.replace(plan, clients=tuple(
        dataclasses.replace(c, train_spec=attrs.evolve(c.train_spec, num_epochs=self._head_epochs))
        for c in plan.clients))

  def _head(self, global_weights, client_id):
    if client_id in self.store:
      return self.store.get(client_id)[STATE]
    return ([np.asarray(w) for w, p in zip(global_weights.trainable, self.mask) if p]
            + [np.asarray(w) for w, p in zip(global_weights.non_trainable,
                                             self.non_trainable_mask) if p])

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    global_trainable = [np.asarray(w) for w in state.global_model_weights.trainable]
    inputs = [collections.OrderedDict(head_data=hd, data=d,
                                      head=self._head(state.global_model_weights, c))
              for c, hd, d in zip(plan.client_ids, self._datasets(self._head_plan(plan)),
                                  self._datasets(plan))]
    results = self._client_phase(state.global_model_weights, inputs)
    deltas, weights = [], []
    totals = np.zeros(4)
    for cid, result in zip(plan.client_ids, results):
      delta = [np.asarray(d, np.float32) for d in result['delta']]
      head = [np.asarray(h, np.float32) for h in result['head']]
      n, steps = int(result['num_examples']), int(result['num_steps'])
      totals += [float(result['loss_sum']), float(result['correct']), n, steps]
      if steps == 0 or n == 0 or not all(np.all(np.isfinite(a)) for a in delta + head):
        continue  # no step taken, or a diverged client: it contributes nothing, keeps its head
      self.store.set(cid, collections.OrderedDict([(STATE, head)]))
      deltas.append(delta)
      weights.append(n if self.variant == 'fedper' else 1)
    if deltas:
      w = np.asarray(weights, np.float64) / np.sum(weights)
      mean_delta = [sum(wk * d.astype(np.float64) for wk, d in zip(w, parts)).astype(np.float32)
                    for parts in zip(*deltas)]
    else:
      mean_delta = [np.zeros_like(a) for a in global_trainable]
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state,
                                                           mean_delta)
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=len(deltas), clients_with_state=len(self.store),
            head_variables=int(sum(self.mask) + sum(self.non_trainable_mask))), name=self._name)

  def personal_model_weights(self, global_weights, client_id: str):
    """Client `client_id`'s model: the global body and its head (`personal_model_weights`)."""
    return personal_model_weights(global_weights, self.store, client_id, self.mask,
                                  self.non_trainable_mask)

  def close(self) -> None:
    pass


@functools.lru_cache(maxsize=8)
def _layers_of(task_name: str, options: str) -> tuple[str, tuple[tuple[str, int], ...]]:
  """The name and `weighted_layers` of a task's model (the task built once per setting)."""
  from tff_lab.tasks import registry as tasks_registry  # pylint: disable=g-import-not-at-top
  model = canonical_model(tasks_registry.create_task(task_name, json.loads(options)))
  return model.name, tuple(weighted_layers(model))


def _hparams(config) -> 'collections.OrderedDict[str, Any]':
  # pylint: disable-next=g-import-not-at-top  (the registry imports this module)
  from tff_lab.algorithms import registry
  return registry.hparams_of(config)


def check(config) -> None:
  """Refuses, in one line, what FedRep/FedPer do not implement and a split that cannot be made."""
  name = config.algorithm
  hparams = _hparams(config)
  try:
    model_name, layers = _layers_of(config.task, json.dumps(config.task_options, sort_keys=True))
  except (ValueError, FileNotFoundError, TypeError):
    return  # a bad task setting: building the task reports it
  split_layers(layers, model_name, hparams['head_layers'], hparams['head_layer_name'])


def build_runner(context, store: client_store_lib.ClientStore) -> FedRepRounds:
  """The `tff` backend's runner for FedRep and FedPer (`tff_lab.simulation.backends`)."""
  config = context.config
  hparams = _hparams(config)
  return FedRepRounds(
      context.task, config.client_learning_rate,
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      store, variant=config.algorithm, head_layers=hparams['head_layers'],
      head_layer_name=hparams['head_layer_name'],
      head_epochs=hparams.get('fedrep_head_epochs', 1))


def _build_process(weighted, task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, **hparams):
  """The process whose state the rounds advance: FedAvg's (model, server optimiser).

  Its own `next` is FedAvg's of the whole model: FedRep and FedPer rounds need the client store
  and run through `FedRepRounds`.
  """
  del with_attacks, hparams
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer, weighted=weighted,
                             model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False, **hparams):
  raise ValueError('--algorithm=fedrep|fedper has no stand-alone client work: its clients need '
                   'their personal heads (FedRepRounds)')


_SPLIT = collections.OrderedDict(
    head_layers=spec_lib.Hyperparameter(
        1, 'FedRep/FedPer: the last k layers with weights are the personal head.', minimum=1),
    head_layer_name=spec_lib.Hyperparameter(
        '', 'FedRep/FedPer: the personal head starts at this layer (overrides head_layers).'))

FEDREP = spec_lib.AlgorithmSpec(
    name='fedrep',
    description='FedRep: shared body, personal head trained first with the body fixed (Collins '
    'et al., ICML 2021)',
    build_process=functools.partial(_build_process, False), build_client_work=_build_client_work,
    weighted=False,
    hparams=collections.OrderedDict(_SPLIT, fedrep_head_epochs=spec_lib.Hyperparameter(
        1, "FedRep: epochs of the head phase, τ_h (the body's are --client_epochs).",
        minimum=1)),
    local_step=None, supports_secure_aggregation=False,
    requires_client_sgd="the papers'",
    aggregates_with='the plain mean of the bodies', simulates_update_attacks=False,
    client_state=(STATE,), check=check,
    initial_store=initial_store, build_runner=build_runner)

FEDPER = spec_lib.AlgorithmSpec(
    name='fedper',
    description='FedPer: shared base layers, personal layers trained jointly (Arivazhagan et al., '
    '2019)',
    build_process=functools.partial(_build_process, True), build_client_work=_build_client_work,
    weighted=True, hparams=collections.OrderedDict(_SPLIT),
    local_step=None, supports_secure_aggregation=False,
    requires_client_sgd="the papers'",
    aggregates_with='the plain mean of the bodies', simulates_update_attacks=False,
    client_state=(STATE,), check=check,
    initial_store=initial_store, build_runner=build_runner)
