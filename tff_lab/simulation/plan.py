"""The plan of one federated round, made once, before any backend runs it.

A `RoundPlan` says everything about round t that does not depend on the model: which clients are
sampled, which of them are Byzantine, drop out or straggle (`tff_lab.faults`), and what each
reporting client trains on (its `ClientPlan`: shuffle seed, reduced local work, label flipping,
update attack). Every backend (`tff_lab.simulation.backends`) executes the same plan, so the
same seed gives the same round on every backend, and a resumed run replays it exactly.

Every source of randomness is a pure function of (seed, round):

* sampling (`tff_lab.simulation.sampling`): m of the N clients uniformly without replacement
  (`sample_clients`), or Poisson with rate m/N; the DP accounting follows the scheme used
  (`tff_lab.privacy.accounting`). Under DP it draws from a per-run secret instead of the seed;
* each sampled client's tf.data shuffle seed, by its position in the sample
  (`client_shuffle_seed`), so faults change nothing else about a round;
* fault roles and the stragglers' reduced work (`tff_lab.faults.assign_roles`,
  `plan_client_inputs`).

The initial model is a function of the seed alone (`initial_model_weights`).

`RoundPlanner(task, clients_per_round, faults, seed).plan(t)` is how the training loop, the
benchmarks and the tests make rounds; nothing builds one by hand.
"""

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.faults import simulation as faults_lib
from tff_lab.simulation import sampling
from tff_lab.tasks import task as task_lib


def sample_clients(client_ids: list[str], num_clients: int, seed: int, round_num: int
                   ) -> list[str]:
  """Uniform sampling without replacement, a pure function of (seed, round_num)."""
  return [client_ids[i] for i in sampling.fixed_size_sample(len(client_ids), num_clients, seed,
                                                            round_num)]


def client_shuffle_seed(seed: int, round_num: int, position: int) -> int:
  """The tf.data shuffle seed of the `position`-th sampled client in round `round_num`."""
  return int(np.random.SeedSequence([seed, round_num, position, 7]).generate_state(1)[0] >> 1)


def initial_model_weights(task: task_lib.Task, seed: int) -> tff.learning.models.ModelWeights:
  """Keras' initialisers under `seed`: the same initial model on every run with that seed."""
  tf.keras.utils.set_random_seed(seed)
  model = task.model_fn()
  return tff.learning.models.ModelWeights(
      trainable=[v.numpy() for v in model.trainable_variables],
      non_trainable=[v.numpy() for v in model.non_trainable_variables])


@dataclasses.dataclass(frozen=True)
class RoundPlan:
  """One round, as every backend executes it.

  Attributes:
    round_num: The round, from 1.
    sampled: The sampled clients, in sampling order (dropped ones included).
    roles: Their fault roles this round.
    clients: The plans of the clients that report, in sampling order.
  """

  round_num: int
  sampled: tuple[str, ...]
  roles: faults_lib.RoundRoles
  clients: tuple[faults_lib.ClientPlan, ...]

  @property
  def client_ids(self) -> tuple[str, ...]:
    """The reporting clients, in sampling order."""
    return tuple(c.client_id for c in self.clients)

  @property
  def num_dropped(self) -> int:
    """Sampled clients that never report (simulated dropouts)."""
    return len(self.roles.dropped)

  def fault_metrics(self) -> 'collections.OrderedDict[str, int]':
    """The round's fault counts (`faults/byzantine`, `faults/dropped`, `faults/stragglers`)."""
    return self.roles.metrics()


class RoundPlanner:
  """Makes the plan of any round of one experiment, as a pure function of (seed, round)."""

  def __init__(self, task: task_lib.Task, clients_per_round: int,
               faults: Optional[faults_lib.FaultConfig] = None, seed: int = 0,
               sampling_scheme: str = 'fixed', sampling_entropy: Optional[int] = None):
    """Describes the experiment's rounds.

    Args:
      task: The task; its training clients are sampled, its ClientSpec is the honest local work.
      clients_per_round: m, clients sampled each round (the expected number with Poisson).
      faults: Simulated attacks and faults (none by default).
      seed: The experiment's seed.
      sampling_scheme: `fixed` (m of N without replacement) or `poisson` (rate m/N).
      sampling_entropy: What sampling draws from: the seed by default, a per-run secret under DP
        (`tff_lab.privacy.secret.sampling_entropy`). Shuffle seeds and faults keep the seed.

    Raises:
      ValueError: If m exceeds the task's clients, or the faults are impossible for m.
    """
    self._task = task
    self._client_ids = list(task.train_data.client_ids)
    if not 1 <= clients_per_round <= len(self._client_ids):
      raise ValueError(f'clients_per_round must be in [1, {len(self._client_ids)}], got '
                       f'{clients_per_round}')
    self._faults = faults or faults_lib.FaultConfig()
    self._faults.validate(clients_per_round)
    if sampling_scheme not in sampling.SCHEMES:
      raise ValueError(f'sampling_scheme must be one of {list(sampling.SCHEMES)}, got '
                       f'{sampling_scheme!r}')
    self.clients_per_round = clients_per_round
    self.seed = seed
    self.sampling_scheme = sampling_scheme
    self._entropy = seed if sampling_entropy is None else sampling_entropy

  @property
  def population(self) -> int:
    """N, the clients sampled from."""
    return len(self._client_ids)

  def plan(self, round_num: int) -> RoundPlan:
    """The plan of round `round_num` (from 1)."""
    if self.sampling_scheme == 'fixed':
      picked = sampling.fixed_size_sample(self.population, self.clients_per_round, self._entropy,
                                          round_num)
    else:
      picked = sampling.poisson_sample(self.population, self.clients_per_round / self.population,
                                       self._entropy, round_num)
    sampled = [self._client_ids[i] for i in picked]
    roles = faults_lib.assign_roles(sampled, self._faults, self.seed, round_num)
    clients = faults_lib.plan_client_inputs(
        self._task, sampled, roles, self._faults, self.seed, round_num,
        lambda position: client_shuffle_seed(self.seed, round_num, position))
    return RoundPlan(round_num=round_num, sampled=tuple(sampled), roles=roles,
                     clients=tuple(clients))


class PlanDatasets:
  """Turns a plan's `ClientPlan`s into the per-client inputs of a TFF computation.

  `PlanDatasets(task)(plan)` is `faults.materialize_client_inputs` on the plan's reporting
  clients: each client's preprocessed dataset, labels flipped for label-flipping attackers, and
  `OrderedDict(data=, attack=)` for update attacks. For the backends that run clients in TFF.
  """

  def __init__(self, task: task_lib.Task):
    self._task = task
    self._num_classes = None  # read from the model only when a plan flips labels

  def __call__(self, plan: RoundPlan) -> list:
    if self._num_classes is None and any(c.flip_labels for c in plan.clients):
      self._num_classes = int(self._task.model_fn().output_shape[-1])
    return faults_lib.materialize_client_inputs(self._task, plan.clients, self._num_classes)
