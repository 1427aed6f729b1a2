r"""Workload W4: W1's round with the aggregator stack, on the fast path and on TFF's runtime.

W1 (`benchmarks/round_throughput.py`: the 2NN, `--clients` clients x `--examples_per_client`
synthetic MNIST-shaped examples, batch `--batch_size`, 1 epoch, client SGD 0.1, server SGD 1.0,
every client every round) with, one at a time, the aggregation settings of issue #11's W4:

  * `clip`: `--clip_norm=1`;
  * `dp`: `--dp=fixed --clip_norm=1 --noise_multiplier=1`;
  * `median`: `--aggregator=median`;
  * `quantize8`: `--compression=quantize --bits=8`.

Rows, measured in this one process with their rounds interleaved (round k of every row, then
round k+1; `round_throughput.time_interleaved`):

  * `<setting> fused`: the `fused` backend's `AggregatingInGraphRunner`
    (`tff_lab.simulation.backends`): clients in one TF program, the stacked deltas through
    `tff_lab.aggregators.in_graph`, then the server step;
  * `<setting> tff`: the `tff` backend (`ProcessRunner`) on the TFF process built with the same
    `create_aggregator(**settings)` factory, as `--simulation=tff` runs it;
  * `vanilla TFF` and `centralised Keras`: W1's rows (plain mean; TFF has no such stack to
    compare against, so this is the same baseline W1 uses).

Printed: per row the median seconds per round, examples/s, and the ratios against vanilla TFF,
against centralised Keras, and (fused rows) against the same setting on TFF's runtime; then one
JSON line (`{"workload": "W4", ...}`).

Run (from the repository root):

  .venv/bin/python benchmarks/aggregation_throughput.py
  .venv/bin/python benchmarks/aggregation_throughput.py --rounds=1 --clients=8 \
      --examples_per_client=20 --settings=median

Heavy: it uses every core; run nothing else heavy alongside it.
"""

import collections
import json
import os
import statistics
import sys
import types

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import round_throughput as w1  # pylint: disable=g-import-not-at-top,wrong-import-position

from tff_lab import algorithms  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_lab import runtime
from tff_lab.aggregators import in_graph
from tff_lab.aggregators import stack
from tff_lab.algorithms import spec as spec_lib
from tff_lab.algorithms import vectorized
from tff_lab.simulation import backends

WORKLOAD = 'W4'
SETTINGS = collections.OrderedDict(
    clip=dict(clip_norm=1.0),
    dp=dict(dp='fixed', clip_norm=1.0, noise_multiplier=1.0),
    median=dict(aggregator='median'),
    quantize8=dict(compression='quantize', bits=8),
)

_SETTINGS = flags.DEFINE_list('settings', list(SETTINGS), f'Which of {list(SETTINGS)} to run.')


def build_rows(task, name: str, settings: dict, seed: int, clients_per_round: int):
  """The fused and tff rows of one aggregation setting, on the same plans."""
  settings = dict(settings, clients_per_round=clients_per_round)
  client_optimizer = algorithms.create_optimizer('sgd', w1.CLIENT_LR)
  server_optimizer = algorithms.create_optimizer('sgd', w1.SERVER_LR)
  factory = stack.create_aggregator(weighted=True, **settings)
  process = algorithms.build_fedavg(task, client_optimizer, server_optimizer,
                                    model_aggregator=factory)
  phase = vectorized.FusedClientPhase(task, w1.CLIENT_LR, spec_lib.PROXIMAL_SGD)
  fused = backends.AggregatingInGraphRunner(
      phase, in_graph.InGraphAggregation(stack.AggregationSettings(**settings), True,
                                         phase.shapes), server_optimizer)
  tff_runner = backends.ProcessRunner(process, task)
  plans = w1.make_plans(task, seed)
  return collections.OrderedDict([
      (f'{name} fused', (types.SimpleNamespace(initialize=process.initialize, next=fused.next),
                         plans)),
      (f'{name} tff', (types.SimpleNamespace(initialize=process.initialize,
                                             next=tff_runner.next), plans)),
  ])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  unknown = [s for s in _SETTINGS.value if s not in SETTINGS]
  if unknown:
    raise app.UsageError(f'unknown --settings {unknown}; choose from {list(SETTINGS)}')
  logging.set_verbosity(logging.WARNING)
  # W1's flags (--clients, --examples_per_client, --batch_size, --seed, --rounds, ...).
  # pylint: disable=protected-access
  clients, per_client = w1._CLIENTS.value, w1._EXAMPLES_PER_CLIENT.value
  batch, seed = w1._BATCH_SIZE.value, w1._SEED.value
  arrays = w1.make_client_arrays(clients, per_client, seed)
  task = w1.make_task(arrays, batch, shuffle_buffer=per_client)
  examples = clients * per_client
  print(f'workload {WORKLOAD}: W1 (2NN, {clients} clients x {per_client} examples, batch '
        f'{batch}) with {", ".join(_SETTINGS.value)}', flush=True)
  try:
    runtime.set_local_context()
    rows = collections.OrderedDict()
    for name in _SETTINGS.value:
      rows.update(build_rows(task, name, SETTINGS[name], seed, clients))
    rows['vanilla TFF'] = w1.bench_vanilla_tff(task.train_data, batch)
    rows['centralised Keras'] = w1.bench_centralized(arrays, batch, seed)
    timings = w1.time_interleaved(rows, w1._WARMUP_ROUNDS.value, w1._ROUNDS.value, examples)
  finally:
    runtime.stop_all_workers()

  rate = {name: examples / statistics.median(s) for name, s in timings.items()}
  vanilla, central = rate['vanilla TFF'], rate['centralised Keras']
  header = (f'{"name":<20s} {"median s/round":>15s} {"examples/s":>12s} {"vs vanilla TFF":>15s} '
            f'{"vs centralised":>15s} {"vs same on tff":>15s}')
  print()
  print(header)
  print('-' * len(header))
  for name, seconds in timings.items():
    same = ''
    if name.endswith(' fused'):
      same = f'{rate[name] / rate[name[:-len(" fused")] + " tff"]:>14.2f}x'
    print(f'{name:<20s} {statistics.median(seconds):>15.3f} {rate[name]:>12.0f} '
          f'{rate[name] / vanilla:>14.2f}x {rate[name] / central:>14.3f}x {same:>15s}')
  print()
  print(json.dumps({
      'workload': WORKLOAD,
      'ratio_vs_vanilla_tff': {s: round(rate[f'{s} fused'] / vanilla, 4)
                               for s in _SETTINGS.value},
      'ratio_vs_centralized': {s: round(rate[f'{s} fused'] / central, 4) for s in _SETTINGS.value},
      'ratio_vs_tff_path': {s: round(rate[f'{s} fused'] / rate[f'{s} tff'], 4)
                            for s in _SETTINGS.value},
      'examples_per_second': {name: round(r, 1) for name, r in rate.items()},
  }))


if __name__ == '__main__':
  app.run(main)
