r"""What an evaluation costs in the main job: TFF's runtime against the fast path's, interleaved.

The main job (`tff-lab-run` with no flags: its default config's task) evaluates every
`eval_every` rounds: federated evaluation over every test client, centralised evaluation on the
pooled test set, and the per-client report's evaluation of the global model on each test client.
This script builds both of the loop's evaluators for that task
(`tff_lab.evaluation.federated.TFFEvaluation` with the report's TFF per-client computation, used
with `--simulation=tff`; `tff_lab.evaluation.fused.FusedEvaluation` and its `each`, used with
the in-graph backends), times `--repeats`
evaluations of each in alternation on the same weights (the first call of each, which traces or
reads the test clients, is timed apart as its set-up), checks that both give the same metrics,
and prints a table of the median times and their ratio, then one JSON line.

Run (from the repository root):

  .venv/bin/python benchmarks/evaluation_cost.py
  .venv/bin/python benchmarks/evaluation_cost.py --repeats=3 --task=seed_linear
"""

import json
import statistics
import time

from absl import app
from absl import flags

import tff_lab  # pylint: disable=g-bad-import-order,unused-import  # first: the managed runtime

from tff_lab.evaluation import federated  # pylint: disable=g-import-not-at-top
from tff_lab.evaluation import fused  # pylint: disable=g-import-not-at-top
from tff_lab.evaluation import personalization  # pylint: disable=g-import-not-at-top
from tff_lab.simulation import plan as plan_lib  # pylint: disable=g-import-not-at-top
from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
from tff_lab.training import loop  # pylint: disable=g-import-not-at-top

_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed evaluations of each evaluator.')
_TASK = flags.DEFINE_string('task', None, 'Task (default: the main job\'s).')


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def _evaluate(evaluation, each, weights, client_ids):
  """One evaluation of the main job: federated, centralised, and the per-client report's."""
  per_client = each(weights, client_ids)
  return {**evaluation.federated(weights),
          **{f'central_{k}': v for k, v in evaluation.centralized(weights).items()},
          'client_accuracy_sum': sum(r['accuracy'] for r in per_client)}


def main(argv):
  del argv
  config = config_lib.ExperimentConfig()
  if _TASK.value:
    config = config_lib.ExperimentConfig(task=_TASK.value)
  task = loop.build_task(config)
  weights = plan_lib.initial_model_weights(task, config.seed)
  ids = list(task.test_data.client_ids)

  def build_tff():
    computation = personalization.build_per_client_evaluation(task)
    return (federated.TFFEvaluation(task),
            lambda w, c: personalization.evaluate_each(task, w, c, computation))

  def build_fused():
    evaluation = fused.FusedEvaluation(task)
    return evaluation, evaluation.each

  setup = {}
  setup['tff'], tff_eval = _timed(build_tff)
  setup['fused'], fused_eval = _timed(build_fused)
  evaluators = {'tff': tff_eval, 'fused': fused_eval}
  first, results = {}, {}
  for name, (evaluation, each) in evaluators.items():
    first[name], results[name] = _timed(lambda e=evaluation, f=each: _evaluate(e, f, weights, ids))
  for key, value in results['tff'].items():  # the same metrics (round-off apart)
    if abs(results['fused'][key] - value) > 1e-4 * max(1.0, abs(value)):
      raise AssertionError(f'{key}: fused {results["fused"][key]} != tff {value}')
  times = {name: [] for name in evaluators}
  for _ in range(_REPEATS.value):
    for name, (evaluation, each) in evaluators.items():
      times[name].append(_timed(lambda e=evaluation, f=each: _evaluate(e, f, weights, ids))[0])
  median = {name: statistics.median(t) for name, t in times.items()}
  print(f'task {task.name}: {len(task.test_data.client_ids)} test clients, '
        f'{len(task.centralized_test_data[1])} pooled test examples; '
        f'{_REPEATS.value} evaluations each, alternated')
  print(f'{"evaluator":<8s} {"build s":>8s} {"first s":>8s} {"median s":>9s}  runs')
  for name in evaluators:
    runs = ' '.join(f'{t:.3f}' for t in times[name])
    print(f'{name:<8s} {setup[name]:8.3f} {first[name]:8.3f} {median[name]:9.4f}  {runs}')
  print(f'tff / fused (median): {median["tff"] / median["fused"]:.1f}x')
  print(json.dumps({'benchmark': 'evaluation_cost', 'task': task.name,
                    'median_seconds': median, 'build_seconds': setup,
                    'first_call_seconds': first,
                    'ratio_tff_over_fused': median['tff'] / median['fused']}))


if __name__ == '__main__':
  app.run(main)
