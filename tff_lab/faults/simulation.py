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

import numpy as np
import tensorflow as tf

from tff_lab.algorithms import client_work as client_work_lib
from tff_lab.tasks import task as task_lib

ATTACKS = ('sign_flip', 'scale', 'gaussian', 'label_flip')
# Prediction kinds (tff_lab.metrics.accuracy) whose labels `flip_labels` knows how to flip.
LABEL_FLIP_KINDS = ('sparse_categorical', 'sign', 'binary')


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


def flip_labels(dataset: tf.data.Dataset, prediction_kind: str, num_classes: int
                ) -> tf.data.Dataset:
  """Label flipping: y → C−1−y (classes), −y (±1 labels) or 1−y (binary labels)."""

  if prediction_kind not in LABEL_FLIP_KINDS:
    raise ValueError(f'label flipping is defined for {LABEL_FLIP_KINDS}, not {prediction_kind!r}')

  def flip(element):
    y = element['y']
    if prediction_kind == 'sparse_categorical':
      flipped = tf.cast(num_classes - 1, y.dtype) - y
    elif prediction_kind == 'sign':
      flipped = -y
    else:
      flipped = tf.cast(1, y.dtype) - y
    return collections.OrderedDict(x=element['x'], y=flipped)

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


def build_client_inputs(task: task_lib.Task, sampled: Sequence[str], roles: RoundRoles,
                        config: FaultConfig, seed: int, round_num: int, num_classes: int,
                        shuffle_seed_fn) -> list:
  """The per-client inputs of `process.next` for this round, faults applied.

  Args:
    task: The task (its ClientSpec is the honest clients' local work).
    sampled: The clients sampled this round, in sampling order.
    roles: This round's roles (`assign_roles`).
    config: The fault settings.
    seed, round_num: Seed the stragglers' reduced work and the Gaussian attack's noise.
    num_classes: Number of classes (label flipping of `sparse_categorical` tasks).
    shuffle_seed_fn: `(position) -> int`, the tf.data shuffle seed of the client at a position in
      `sampled` (the same seeds as a fault-free run, so faults change nothing else).

  Returns:
    Datasets (or, when `config.update_attacks`, `OrderedDict(data=, attack=)`) for the clients
    that report, in sampling order.
  """
  straggler_rng = _rng(seed, round_num, 1)
  byzantine, dropped, stragglers = set(roles.byzantine), set(roles.dropped), set(roles.stragglers)
  inputs = []
  for position, cid in enumerate(sampled):
    if cid in dropped:
      continue
    raw = task.train_data.create_tf_dataset_for_client(cid)
    client_task = task
    if cid in stragglers:
      client_task = straggler_task(task, int(raw.cardinality()), straggler_rng)
    if cid in byzantine and config.attack == 'label_flip':
      raw = flip_labels(raw, task.prediction_kind, num_classes)
    dataset = client_task.preprocess_train(raw, seed=shuffle_seed_fn(position))
    if config.update_attacks:
      attack = config.attack if cid in byzantine else 'none'
      attack_seed = int(_rng(seed, round_num, 2 + position).integers(2**31 - 1))
      dataset = collections.OrderedDict(
          data=dataset, attack=client_work_lib.attack_spec(attack, config.attack_scale,
                                                           attack_seed))
    inputs.append(dataset)
  return inputs
