"""McMahan et al. 2017 on mnist5k: the grid, rounds to target, and the quick report's claim."""

import numpy as np

from tff_lab import baselines
from tff_lab.baselines import mcmahan2017
from tff_lab.baselines import reproduction


def _result(rounds, accuracy):
  run = reproduction.Run(name='r', config=None, labels={})
  rows = [{'round': r, 'central_eval_accuracy': a} for r, a in zip(rounds, accuracy)]
  return reproduction.RunResult(run=run, directory='', rows=rows, summary={}, reused=False)


def test_rounds_to_target_is_the_interpolated_crossing_of_the_best_so_far_curve():
  # Best so far: 0.5, 0.7, 0.7 (the dip is ignored), 0.9: 0.8 is crossed halfway from 6 to 8.
  result = _result([2, 4, 6, 8], [0.5, 0.7, 0.6, 0.9])
  assert np.isclose(mcmahan2017.rounds_to_target(result, 0.8), 6 + (0.8 - 0.7) / 0.2 * 2)
  assert mcmahan2017.rounds_to_target(result, 0.5) == 2
  assert np.isnan(mcmahan2017.rounds_to_target(result, 0.95))


def test_grid_has_both_tables_with_the_papers_settings():
  runs = mcmahan2017.runs(quick=False, seeds=1)
  settings = {(r.labels['partition'], r.labels['C'], r.labels['E'], r.labels['B']) for r in runs}
  assert len(settings) == len(runs)  # no setting twice (Table 1's C = 0.1 rows are Table 2's)
  for partition in ('iid', 'shards'):
    for c in mcmahan2017.TABLE1_C:
      assert {(partition, c, 1, '∞'), (partition, c, 1, '10')} <= settings
    for e, b in mcmahan2017.TABLE2_EB:
      assert (partition, 0.1, e, '∞' if b is None else str(b)) in settings
  for r in runs:
    c = r.config
    c.validate()
    assert c.clients_per_round == max(1, round(r.labels['C'] * 100))
    assert c.algorithm == ('fedsgd' if (r.labels['E'], r.labels['B']) == (1, '∞') else 'fedavg')
    assert c.task_options['partition'] == r.labels['partition'] and c.task_options['model'] == '2nn'
    if r.labels['B'] == '∞':  # the whole 40-digit training split in one batch
      assert c.client_batch_size == mcmahan2017.FULL_BATCH


def test_quick_reproduction_holds_its_quick_claim(tmp_path):
  report = reproduction.reproduce(baselines.get_paper('mcmahan2017'), str(tmp_path), quick=True)
  held = {claim.name: result.held for claim, result in report.claims}
  assert held['fedavg_fewer_rounds_than_fedsgd'] is True
  text = open(report.path, encoding='utf-8').read()
  assert '## Claims' in text and 'mcmahan2017_accuracy.png' in text
