"""FedBN: FedAvg with the batch-normalisation layers kept local to each client.

Li, Jiang, Zhang, Kamp, Dou, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021 (arXiv:2102.07623), Algorithm 1. Clients whose features differ (other
scanners, cameras, handwriting) share every weight but those of the batch-norm layers: each
client k keeps its own BN parameters and statistics β_k = (γ_k, β_k, moving mean, moving
variance), trained and updated only on its data, and the server averages the rest, θ, as FedAvg
does. A round t with sampled clients S_t is

    client k:  (θ, β) ← (θᵗ, β_k) (β_k: the global model's initial BN values when k is first seen);
               client_epochs epochs of SGD on (θ, β) jointly, in training mode (the moving
               statistics follow the client's batches); keeps β_k ← β; sends Δ_k = θᵗ − θ
    server:    θᵗ⁺¹ ← server_optimizer(θᵗ, Σ_k n_k Δ_k / Σ_k n_k)

with n_k the examples client k processed (FedAvg's weights). The server's copy of the BN layers
is never updated (its pseudo-gradient is 0, and non-trainable variables are not averaged): it
is the initial one, from which every new client's β_k starts.

How it runs here: as FedPer's rounds (`tff_lab.algorithms.fedrep.FedRepRounds`) with the
personal part chosen by layer type instead of by position: the variables of every
`BatchNormalization` layer of the model (nested ones too), trainable and non-trainable. They
live in the engine's client store (state `head`, FedRep's: the BN layers' trainable arrays, then
their non-trainable ones, in the model's order), which checkpoints carry, so resume is exact.
Personalised models for the per-client report (`tff_lab.evaluation.personalization`) are the
global θ with client k's BN layers (the global ones for a client never sampled); the global
model, evaluated as every algorithm's, keeps the initial BN layers. A model without batch
normalisation is refused in one line before tracing (`check`), as is what FedPer's rounds do not
run: the `tff` backend only, client SGD, the plain weighted mean, no update attacks.
"""

import collections
import functools
import json
from typing import Sequence

import tensorflow as tf

from tff_lab.algorithms import fedrep
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.tasks import task as task_lib

STATE = fedrep.STATE
NAME = 'fedbn'


class NoBatchNormError(ValueError):
  """The model has no BatchNormalization layer."""


def bn_masks(model: tf.keras.Model) -> tuple[list[bool], list[bool]]:
  """Per trainable and per non-trainable variable of `model`, whether it is a batch-norm layer's.

  Raises:
    NoBatchNormError: One line, for a model with no BatchNormalization layer.
  """
  bn_layers = [m for m in model.submodules if isinstance(m, tf.keras.layers.BatchNormalization)]
  if not bn_layers:
    raise NoBatchNormError(f'--algorithm={NAME} needs a model with batch normalisation (model '
                     f'{model.name!r} has no BatchNormalization layer), e.g. '
                     '--digits_model=cnn_bn')
  personal = {id(v) for layer in bn_layers for v in layer.weights}
  return ([id(v) in personal for v in model.trainable_variables],
          [id(v) in personal for v in model.non_trainable_variables])


def masks_of(task: task_lib.Task) -> tuple[list[bool], list[bool]]:
  """`bn_masks` of the task's model, built in a fresh graph (`fedrep.canonical_model`)."""
  return bn_masks(fedrep.canonical_model(task))


class FedBNRounds(fedrep.FedRepRounds):
  """FedBN rounds on the `tff` backend: FedPer's, with the BN layers as the personal part."""

  def __init__(self, task: task_lib.Task, client_learning_rate: float, server_optimizer,
               store: client_store_lib.ClientStore):
    """Builds the round's TFF computation (tracing).

    Args:
      task: The task trained; its model has at least one BatchNormalization layer.
      client_learning_rate: η of the local SGD.
      server_optimizer: Applies the weighted mean delta of the shared weights.
      store: The client store (the BN variables of every client sampled).
    """
    super().__init__(task, client_learning_rate, server_optimizer, store, variant='fedper',
                     masks=masks_of(task), name=NAME)


@functools.lru_cache(maxsize=8)
def _masks_of(task_name: str, options: str) -> tuple[Sequence[bool], Sequence[bool]]:
  """`masks_of` a registered task (built once per setting)."""
  from tff_lab.tasks import registry as tasks_registry  # pylint: disable=g-import-not-at-top
  return masks_of(tasks_registry.create_task(task_name, json.loads(options)))


def check(config) -> None:
  """Refuses, in one line, a task whose model has no batch normalisation."""
  try:
    _masks_of(config.task, json.dumps(config.task_options, sort_keys=True))
  except NoBatchNormError:
    raise
  except (ValueError, FileNotFoundError, TypeError):
    return  # a bad task setting: building the task reports it


def build_runner(context, store: client_store_lib.ClientStore) -> FedBNRounds:
  """The `tff` backend's runner for FedBN (`tff_lab.simulation.backends`)."""
  config = context.config
  return FedBNRounds(
      context.task, config.client_learning_rate,
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      store)


def _build_client_work(task, client_optimizer, with_attacks=False, **hparams):
  raise ValueError(f'--algorithm={NAME} has no stand-alone client work: its clients need their '
                   'own batch-norm layers (FedBNRounds)')


SPEC = spec_lib.AlgorithmSpec(
    name=NAME,
    description='FedBN: FedAvg with batch-norm layers kept local to each client (Li et al., '
    'ICLR 2021)',
    build_process=functools.partial(fedrep._build_process, True),  # pylint: disable=protected-access
    build_client_work=_build_client_work, weighted=True, hparams=collections.OrderedDict(),
    local_step=None, supports_secure_aggregation=False, requires_client_sgd="the paper's",
    aggregates_with='the plain weighted mean of the shared weights',
    simulates_update_attacks=False, client_state=(STATE,), check=check,
    initial_store=fedrep.initial_store, build_runner=build_runner)
