"""Simulated Byzantine clients, dropouts and stragglers, decided per round and seeded.

Options on any experiment (issue "Aggregation": attacks and faults):

* Byzantine clients, a fraction of each round's sampled clients, with one attack:
  - `sign_flip`: report −c·Δ instead of the honest delta Δ (c = `attack_scale`);
  - `scale`: report c·Δ (model replacement / boosting, Bagdasaryan et al. AISTATS 2020);
  - `gaussian`: report N(0, c²) noise (the Gaussian attack of Blanchard et al. NeurIPS 2017);
  - `label_flip`: train honestly on flipped labels (y → C−1−y for classes, −y for ±1 labels,
    1−y for binary labels; Yin et al. ICML 2018 use y → 9−y on MNIST).
  The first three act on the update inside the client work (`tff_lab.algorithms.client_work`);
  label flipping acts on the client's data.
* Dropouts: a fraction of the sampled clients never reports (they are left out of the round).
* Stragglers: a fraction does only part of its local work, as in FedProx (Li et al. MLSys 2020,
  arXiv:1812.06127, §5.2): with E ≥ 2 local epochs a straggler runs a uniformly random number of
  epochs in {1, …, E−1} (the authors' `randint(1, E)`); with E = 1 it processes a uniformly random
  number of its examples in {1, …, n−1}.

Roles are disjoint and drawn in this order from a generator seeded by (seed, round): Byzantine
among the sampled clients, dropouts among the rest, stragglers among the remaining honest ones.
Counts are round(fraction · clients_per_round). Everything is a pure function of (seed, round),
so faults replay exactly on resume.
"""

import collections
from collections.abc import Sequence
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_lab.tasks import task as task_lib

ATTACKS = ('sign_flip', 'scale', 'gaussian', 'label_flip')
# Prediction kinds (tff_lab.metrics.accuracy) whose labels `flip_labels` knows how to flip.
LABEL_FLIP_KINDS = ('sparse_categorical', 'sign', 'binary')


# Update attacks as the client work encodes them (tff_lab.algorithms.client_work applies them).
ATTACK_KINDS = collections.OrderedDict(none=0, sign_flip=1, scale=2, gaussian=3)


def attack_spec(kind: str = 'none', scale: float = 1.0, seed: int = 0) -> tf.data.Dataset:
  """The per-client attack input of a `with_attacks` client work: a one-element dataset.

  (TFF requires client-placed inputs of a client work to be sequences, hence the dataset.)
  """
  if kind not in ATTACK_KINDS:
    raise ValueError(f'unknown attack {kind!r}; choose one of {list(ATTACK_KINDS)}')
  return tf.data.Dataset.from_tensors(collections.OrderedDict(
      kind=np.int32(ATTACK_KINDS[kind]), scale=np.float32(scale), seed=np.int32(seed)))


@dataclasses.dataclass(frozen=True)
class FaultConfig:
  """Per-round fault simulation settings (all fractions of the clients sampled per round)."""

  byzantine_fraction: float = 0.0
  attack: str = 'sign_flip'
  attack_scale: float = 1.0
  dropout_fraction: float = 0.0
  straggler_fraction: float = 0.0

  @property
  def update_attacks(self) -> bool:
    """True when Byzantine clients alter their updates (needs the attack-aware client work)."""
    return self.byzantine_fraction > 0 and self.attack != 'label_flip'

  def counts(self, clients_per_round: int) -> tuple[int, int, int]:
    k = clients_per_round
    return (int(round(self.byzantine_fraction * k)), int(round(self.dropout_fraction * k)),
            int(round(self.straggler_fraction * k)))

  def validate(self, clients_per_round: int) -> None:
    """Raises ValueError (one line, naming the setting) for impossible settings."""
    for name in ('byzantine_fraction', 'dropout_fraction', 'straggler_fraction'):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f'{name} must be in [0, 1), got {value}')
    if self.attack not in ATTACKS:
      raise ValueError(f'unknown attack {self.attack!r}; choose one of {list(ATTACKS)}')
    if not self.attack_scale > 0:
      raise ValueError(f'attack_scale must be positive, got {self.attack_scale}')
    byzantine, dropped, stragglers = self.counts(clients_per_round)
    if byzantine + dropped >= clients_per_round:
      raise ValueError(f'byzantine_fraction + dropout_fraction leave no honest client reporting '
                       f'out of clients_per_round={clients_per_round}')
    if byzantine + dropped + stragglers > clients_per_round:
      raise ValueError('byzantine_fraction + dropout_fraction + straggler_fraction exceed 1')


@dataclasses.dataclass(frozen=True)
class RoundRoles:
  byzantine: tuple[str, ...]
  dropped: tuple[str, ...]
  stragglers: tuple[str, ...]

  def metrics(self) -> 'collections.OrderedDict[str, int]':
    return collections.OrderedDict([('faults/byzantine', len(self.byzantine)),
                                    ('faults/dropped', len(self.dropped)),
                                    ('faults/stragglers', len(self.stragglers))])


def _rng(seed: int, round_num: int, salt: int) -> np.random.Generator:
  return np.random.default_rng([seed, round_num, 0xFA17, salt])


def assign_roles(sampled: Sequence[str], config: FaultConfig, seed: int, round_num: int
                 ) -> RoundRoles:
  """Picks this round's Byzantine, dropped and straggling clients (disjoint, seeded)."""
  byzantine, dropped, stragglers = config.counts(len(sampled))
  order = [sampled[i] for i in _rng(seed, round_num, 0).permutation(len(sampled))]
  return RoundRoles(byzantine=tuple(order[:byzantine]),
                    dropped=tuple(order[byzantine:byzantine + dropped]),
                    stragglers=tuple(order[byzantine + dropped:byzantine + dropped + stragglers]))


def flipped_labels(y, prediction_kind: str, num_classes: int):
  """Label flipping of a label tensor or array: C−1−y (classes), −y (±1 labels), 1−y (binary)."""
  if prediction_kind not in LABEL_FLIP_KINDS:
    raise ValueError(f'label flipping is defined for {LABEL_FLIP_KINDS}, not {prediction_kind!r}')
  if prediction_kind == 'sparse_categorical':
    return (num_classes - 1) - y
  if prediction_kind == 'sign':
    return -y
  return 1 - y


def flip_labels(dataset: tf.data.Dataset, prediction_kind: str, num_classes: int
                ) -> tf.data.Dataset:
  """The dataset with `flipped_labels` applied to every element's `y`."""
  flipped_labels(0, prediction_kind, num_classes)  # refuse an unknown kind before mapping

  def flip(element):
    y = element['y']
    return collections.OrderedDict(
        x=element['x'], y=tf.cast(flipped_labels(y, prediction_kind, num_classes), y.dtype))

  return dataset.map(flip)


def straggler_task(task: task_lib.Task, num_examples: int, rng: np.random.Generator
                   ) -> task_lib.Task:
  """The task with a straggler's reduced local work (see the module docstring)."""
  epochs = task.train_spec.num_epochs
  if epochs >= 2:
    return task.with_train_spec(num_epochs=int(rng.integers(1, epochs)))
  if num_examples >= 2:
    return task.with_train_spec(max_elements=int(rng.integers(1, num_examples)))
  return task


@dataclasses.dataclass(frozen=True)
class ClientPlan:
  """What one reporting client does in a round, before any dataset is built.

  Attributes:
    client_id: The client.
    shuffle_seed: Its tf.data shuffle seed this round.
    train_spec: Its local work (the task's ClientSpec, reduced for a straggler).
    flip_labels: A label-flipping Byzantine client.
    attack: `attack_spec(...)` when the run simulates update attacks, else None.
  """

  client_id: str
  shuffle_seed: int
  train_spec: task_lib.ClientSpec
  flip_labels: bool = False
  attack: Optional[collections.OrderedDict] = None


def plan_client_inputs(task: task_lib.Task, sampled: Sequence[str], roles: RoundRoles,
                       config: FaultConfig, seed: int, round_num: int, shuffle_seed_fn
                       ) -> list[ClientPlan]:
  """The plans of this round's reporting clients, faults applied, in sampling order.

  Args:
    task: The task (its ClientSpec is the honest clients' local work).
    sampled: The clients sampled this round, in sampling order.
    roles: This round's roles (`assign_roles`).
    config: The fault settings.
    seed, round_num: Seed the stragglers' reduced work and the Gaussian attack's noise.
    shuffle_seed_fn: `(position) -> int`, the tf.data shuffle seed of the client at a position in
      `sampled` (the same seeds as a fault-free run, so faults change nothing else).
  """
  straggler_rng = _rng(seed, round_num, 1)
  byzantine, dropped, stragglers = set(roles.byzantine), set(roles.dropped), set(roles.stragglers)
  plans = []
  for position, cid in enumerate(sampled):
    if cid in dropped:
      continue
    spec = task.train_spec
    if cid in stragglers:
      num_examples = int(task.train_data.create_tf_dataset_for_client(cid).cardinality())
      spec = straggler_task(task, num_examples, straggler_rng).train_spec
    attack = None
    if config.update_attacks:
      attack_seed = int(_rng(seed, round_num, 2 + position).integers(2**31 - 1))
      attack = attack_spec(config.attack if cid in byzantine else 'none',
                                           config.attack_scale, attack_seed)
    plans.append(ClientPlan(
        client_id=cid, shuffle_seed=shuffle_seed_fn(position), train_spec=spec,
        flip_labels=cid in byzantine and config.attack == 'label_flip', attack=attack))
  return plans


def materialize_client_inputs(task: task_lib.Task, plans: Sequence[ClientPlan],
                              num_classes: int) -> list:
  """The per-client inputs of `process.next` for `plans`.

  Returns:
    Datasets (or, for plans with an attack, `OrderedDict(data=, attack=)`), in the plans' order.
  """
  inputs = []
  for plan in plans:
    raw = task.train_data.create_tf_dataset_for_client(plan.client_id)
    if plan.flip_labels:
      raw = flip_labels(raw, task.prediction_kind, num_classes)
    client_task = task if plan.train_spec is task.train_spec else dataclasses.replace(
        task, train_spec=plan.train_spec)
    dataset = client_task.preprocess_train(raw, seed=plan.shuffle_seed)
    if plan.attack is not None:
      dataset = collections.OrderedDict(data=dataset, attack=plan.attack)
    inputs.append(dataset)
  return inputs


def build_client_inputs(task: task_lib.Task, sampled: Sequence[str], roles: RoundRoles,
                        config: FaultConfig, seed: int, round_num: int, num_classes: int,
                        shuffle_seed_fn) -> list:
  """The per-client inputs of `process.next` for this round, faults applied.

  `plan_client_inputs` then `materialize_client_inputs`; see those for the arguments.

  Returns:
    Datasets (or, when `config.update_attacks`, `OrderedDict(data=, attack=)`) for the clients
    that report, in sampling order.
  """
  plans = plan_client_inputs(task, sampled, roles, config, seed, round_num, shuffle_seed_fn)
  return materialize_client_inputs(task, plans, num_classes)
