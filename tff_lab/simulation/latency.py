"""Simulated client latencies: how long each client's local training takes on a simulated clock.

Asynchronous FL (FedBuff: Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated
Learning with Buffered Asynchronous Aggregation", AISTATS 2022, arXiv:2106.06639) is about clients
of very different speeds, so its simulation needs a clock. A `LatencyModel` gives each client a
fixed *median* latency, drawn once per run, and each task (one dispatch of one client) a latency

    latency(client, task) = median(client) · exp(jitter · ε_task),   ε_task ~ N(0, 1)

so a client is consistently fast or slow, with per-task noise around its own median (a device's
speed barely changes from one task to the next, its load does). The per-client medians come from:

* `lognormal`: median(i) = latency_median · exp(latency_sigma · z_i), z_i ~ N(0, 1); `sigma` is the
  spread of the client population (0: every client equally fast);
* `heavy_tail`: the lognormal above, times a Pareto(α) slow-down x ≥ 1 (P[x > s] = s^-α) for a
  `tail_fraction` of the clients (a lognormal/Pareto mixture: most devices lognormal, a few very
  slow ones; α ≤ 2 has infinite variance, α ≤ 1 an infinite mean);
* `file`: a CSV `client_id,latency` (simulated seconds per task) or `client_id,speed` (tasks per
  simulated second, latency = 1/speed) naming every training client once (`read_latency_file`).

These are tff_lab's modelling choices, not the paper's. Every draw is a pure function of the run's
seed (the per-client medians) and of (seed, wave, position) for a task: the `position`-th client
dispatched in dispatch wave `wave` (a synchronous round is one wave of its sampled clients), so
a resumed run redraws exactly the same latencies, and an asynchronous run whose waves are the
synchronous rounds (buffer = concurrency = clients per round) sees the same latencies as those
rounds.

A synchronous round lasts as long as its slowest reporting client (`round_duration`);
`ClockedRunner` adds that `simulated_time` to every round of the synchronous backends, so
accuracy against simulated time can be compared with `--simulation=async`
(`tff_lab.simulation.asynchronous`).
"""

import collections
import csv
import math
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow_federated as tff

MODELS = ('lognormal', 'heavy_tail', 'file')
FILE_COLUMNS = ('latency', 'speed')

# Streams of the seed's generators, apart from every other use of the seed in tff_lab.
_CLIENT_STREAM = 0x1a7e
_TASK_STREAM = 0x1a7f


class LatencyFileError(ValueError):
  """A latency file cannot be read, does not parse, or does not match the task's clients."""


def read_latency_file(path: str) -> 'collections.OrderedDict[str, float]':
  """Reads a latency CSV: header `client_id,latency` or `client_id,speed`, one row per client.

  Args:
    path: The file.

  Returns:
    Each client's median latency (simulated seconds per task), in file order.

  Raises:
    LatencyFileError: One line naming the file, and the line, for a file that is missing or not
      UTF-8, has another header, a row without two fields, a value that is not a positive finite
      number, a client listed twice, or no rows.
  """
  try:
    with open(path, newline='', encoding='utf-8') as f:
      rows = list(csv.reader(f))
  except OSError as e:
    raise LatencyFileError(f'latency file {path!r} cannot be read: {e.strerror or e}') from None
  except (UnicodeDecodeError, csv.Error) as e:
    raise LatencyFileError(f'latency file {path!r} does not parse as CSV ({e})') from None
  rows = [(number, row) for number, row in enumerate(rows, 1) if any(c.strip() for c in row)]
  if not rows:
    raise LatencyFileError(f'latency file {path!r} is empty; it needs a header client_id,latency '
                           'or client_id,speed and one row per client')
  header = [c.strip() for c in rows[0][1]]
  if len(header) != 2 or header[0] != 'client_id' or header[1] not in FILE_COLUMNS:
    raise LatencyFileError(f'latency file {path!r} line {rows[0][0]}: the header must be '
                           f'client_id,latency or client_id,speed, got {",".join(header)!r}')
  column = header[1]
  out = collections.OrderedDict()
  for number, row in rows[1:]:
    where = f'latency file {path!r} line {number}'
    if len(row) != 2:
      raise LatencyFileError(f'{where}: expected 2 fields (client_id,{column}), got {len(row)}')
    cid, text = row[0].strip(), row[1].strip()
    try:
      value = float(text)
    except ValueError:
      raise LatencyFileError(f'{where}: {column} {text!r} is not a number') from None
    if not (math.isfinite(value) and value > 0):
      raise LatencyFileError(f'{where}: {column} must be a positive finite number, got {text}')
    if cid in out:
      raise LatencyFileError(f'{where}: client {cid!r} is listed twice')
    out[cid] = value if column == 'latency' else 1.0 / value
  if not out:
    raise LatencyFileError(f'latency file {path!r} has a header but no client rows')
  return out


def check_file_clients(path: str, latencies: dict, client_ids: Sequence[str]) -> None:
  """Raises a one-line LatencyFileError unless `latencies` names exactly the task's clients."""
  known = set(client_ids)
  unknown = [c for c in latencies if c not in known]
  if unknown:
    raise LatencyFileError(f'latency file {path!r} names {len(unknown)} client(s) the task does '
                           f'not have: {", ".join(map(repr, unknown[:3]))}'
                           f'{", ..." if len(unknown) > 3 else ""}')
  missing = [c for c in client_ids if c not in latencies]
  if missing:
    more = ', ...' if len(missing) > 3 else ''
    raise LatencyFileError(f'latency file {path!r} gives no latency for {len(missing)} of the '
                           f'task\'s {len(client_ids)} training clients: '
                           f'{", ".join(map(repr, missing[:3]))}{more}')


class LatencyModel:
  """Per-client median latencies (fixed for the run) and the latency of each task."""

  def __init__(self, medians: 'collections.OrderedDict[str, float]', jitter: float, seed: int):
    """A model from its medians.

    Args:
      medians: Each training client's median latency, in simulated seconds.
      jitter: σ of the per-task lognormal factor exp(jitter · ε) (0: every task at the median).
      seed: The run's seed (with the task's wave and position, it seeds ε).
    """
    self.medians = collections.OrderedDict((c, float(m)) for c, m in medians.items())
    self.jitter = float(jitter)
    self.seed = int(seed)

  def task_latency(self, client_id: str, wave: int, position: int) -> float:
    """The latency of the `position`-th client dispatched in wave `wave` (a pure function)."""
    median = self.medians[client_id]
    if self.jitter == 0.0:
      return median
    eps = np.random.default_rng([self.seed, _TASK_STREAM, int(wave), int(position)]
                                ).standard_normal()
    return float(median * math.exp(self.jitter * eps))

  def round_duration(self, plan) -> float:
    """A synchronous round's duration: its slowest reporting client's latency (0 if none report).

    Args:
      plan: The round's `tff_lab.simulation.plan.RoundPlan`; position = place in `plan.sampled`.
    """
    positions = {cid: p for p, cid in enumerate(plan.sampled)}
    return max((self.task_latency(cid, plan.round_num, positions[cid]) for cid in plan.client_ids),
               default=0.0)


def client_medians(model: str, client_ids: Sequence[str], seed: int, *, median: float = 1.0,
                   sigma: float = 0.5, tail_fraction: float = 0.1, tail_alpha: float = 1.5,
                   latency_file: str = '') -> 'collections.OrderedDict[str, float]':
  """Each client's median latency under `model` (see the module docstring).

  Args:
    model: One of `MODELS`.
    client_ids: The training clients (their order fixes which draw each client gets).
    seed: The run's seed.
    median: The population's median latency (lognormal, heavy_tail).
    sigma: The lognormal spread of client medians (lognormal, heavy_tail).
    tail_fraction: The fraction of clients slowed down by a Pareto factor (heavy_tail).
    tail_alpha: The Pareto index α (heavy_tail).
    latency_file: The CSV (file).

  Raises:
    LatencyFileError: For a bad file, or one that does not name exactly `client_ids`.
    ValueError: For an unknown model.
  """
  if model == 'file':
    latencies = read_latency_file(latency_file)
    check_file_clients(latency_file, latencies, client_ids)
    return collections.OrderedDict((c, latencies[c]) for c in client_ids)
  if model not in MODELS:
    raise ValueError(f'unknown latency model {model!r}; choose one of {list(MODELS)}')
  rng = np.random.default_rng([int(seed), _CLIENT_STREAM])
  n = len(client_ids)
  values = median * np.exp(sigma * rng.standard_normal(n))
  if model == 'heavy_tail':
    slow = rng.random(n) < tail_fraction
    pareto = (1.0 - rng.random(n)) ** (-1.0 / tail_alpha)  # Pareto(α), support [1, ∞)
    values = values * np.where(slow, pareto, 1.0)
  return collections.OrderedDict((c, float(v)) for c, v in zip(client_ids, values))


def create_latency_model(settings: Any, client_ids: Sequence[str], seed: int) -> LatencyModel:
  """The latency model of `settings` (an `AsyncSettings`, `tff_lab.simulation.asynchronous`)."""
  medians = client_medians(
      settings.latency_model, client_ids, seed, median=settings.latency_median,
      sigma=settings.latency_sigma, tail_fraction=settings.latency_tail_fraction,
      tail_alpha=settings.latency_tail_alpha, latency_file=settings.latency_file)
  return LatencyModel(medians, settings.latency_jitter, seed)


class ClockedRunner:
  """A synchronous backend's runner with a simulated clock: `simulated_time` after each round.

  Each round advances the clock by `LatencyModel.round_duration(plan)`. The clock goes into the
  checkpoints (`checkpoint_parts` / `restore_parts`, the `simulated_clock` part), so a resumed
  run continues it exactly. Everything else is the wrapped runner's (attributes such as
  `dp_mechanism` are forwarded). Under DP, `simulated_time` is withheld by default like every
  metric `tff_lab.privacy.release` does not list: it depends on which clients were sampled.
  """

  simulates_clock = True

  def __init__(self, runner: Any, latency_model: LatencyModel):
    self._runner = runner
    self._latency = latency_model
    self.clock = 0.0

  def __getattr__(self, name):
    return getattr(self._runner, name)

  def next(self, state, plan) -> tff.learning.templates.LearningProcessOutput:
    output = self._runner.next(state, plan)
    self.clock += self._latency.round_duration(plan)
    metrics = collections.OrderedDict(output.metrics)
    metrics['simulated_time'] = self.clock
    return tff.learning.templates.LearningProcessOutput(output.state, metrics)

  def checkpoint_parts(self) -> 'collections.OrderedDict[str, Any]':
    """The checkpoint extra parts this runner keeps (the wrapped runner's too)."""
    parts = collections.OrderedDict()
    inner = getattr(self._runner, 'checkpoint_parts', None)
    if inner is not None:
      parts.update(inner())
    parts['simulated_clock'] = collections.OrderedDict(time=float(self.clock))
    return parts

  def restore_parts(self, extra: Optional[dict]) -> None:
    """Restores the clock from a checkpoint's extra parts (0 if it predates the clock)."""
    inner = getattr(self._runner, 'restore_parts', None)
    if inner is not None:
      inner(extra)
    part = (extra or {}).get('simulated_clock')
    self.clock = float(part['time']) if part else 0.0

  def close(self) -> None:
    self._runner.close()

