"""The reproduction mechanism: paper registry, claim selection, output-dir checks, helpers."""

import json
import os

import numpy as np
import pytest

from tff_lab import baselines
from tff_lab import training
from tff_lab.baselines import reproduction


def test_every_paper_loads_and_names_its_parts():
  for name in baselines.paper_names():
    paper = baselines.get_paper(name)
    assert paper.name == name
    assert paper.claims and paper.published and paper.citation
    assert len({c.name for c in paper.claims}) == len(paper.claims)
    for quick in (False, True):
      assert all(h.source for h in paper.setup(quick))


def test_unknown_paper_lists_the_known_ones():
  with pytest.raises(ValueError, match='known papers: seed_article, fedprox') as e:
    baselines.get_paper('fedavg2017')
  assert '\n' not in str(e.value)


def test_unknown_claim_lists_the_known_ones():
  paper = baselines.get_paper('seed_article')
  with pytest.raises(training.ConfigError, match='known claims: fedsgd_equals_gd, ') as e:
    reproduction.select_claims(paper, ['fedsgd_equals_gd', 'nope'])
  assert "['nope']" in str(e.value) and '\n' not in str(e.value)
  assert [c.name for c in reproduction.select_claims(paper, ['converges_to_least_squares'])] == [
      'converges_to_least_squares']
  assert len(reproduction.select_claims(paper, [])) == len(paper.claims)


def test_plan_sets_output_locations_and_refuses_bad_seeds(tmp_path):
  paper = baselines.get_paper('seed_article')
  runs = reproduction.plan(paper, str(tmp_path), quick=True, seeds=2)
  assert [r.name for r in runs] == ['iid_seed0', 'iid_seed1']
  assert all(r.config.root_output_dir == os.path.join(str(tmp_path), 'runs') for r in runs)
  assert all(r.config.experiment_name == r.name for r in runs)
  with pytest.raises(training.ConfigError, match='--seeds must be >= 1'):
    reproduction.plan(paper, str(tmp_path), seeds=0)


def test_output_dir_with_other_settings_is_refused_naming_the_difference(tmp_path):
  reproduction.check_output_dir(str(tmp_path), dict(paper='fedprox', quick=True, seeds=1))
  reproduction.check_output_dir(str(tmp_path), dict(paper='fedprox', quick=True, seeds=1))
  with pytest.raises(training.ConfigError) as e:
    reproduction.check_output_dir(str(tmp_path), dict(paper='fedprox', quick=False, seeds=10))
  message = str(e.value)
  assert 'quick: saved True, given False' in message and 'seeds: saved 1, given 10' in message
  assert 'paper' not in message.split('(')[1] and '\n' not in message
  with open(tmp_path / reproduction.MANIFEST_NAME) as f:
    assert json.load(f)['quick'] is True  # the refused call changed nothing


def test_results_pair_runs_by_seed():
  def result(method, seed):
    run = reproduction.Run(f'{method}{seed}', training.ExperimentConfig(),
                           dict(method=method, seed=seed))
    return reproduction.RunResult(run, '', [{'round': 1, 'loss': float(seed)}], {}, False)

  results = reproduction.Results([result('a', 0), result('a', 1), result('b', 1),
                                  result('b', 2)], quick=True)
  pairs = results.paired(dict(method='a'), dict(method='b'))
  assert [(s, a.run.name, b.run.name) for s, a, b in pairs] == [(1, 'a1', 'b1')]
  assert results.select(method='b')[1].final('loss') == 2.0
  assert np.isnan(results.select(method='b')[1].final('missing'))


def test_mean_std_and_read_metrics(tmp_path):
  assert reproduction.mean_std([1.0, 3.0], 2) == '2.00 ± 1.41 (n=2)'
  assert reproduction.mean_std([1.5], 1) == '1.5 (n=1)'
  path = tmp_path / 'metrics.csv'
  path.write_text('round,train_loss,fed_eval_loss\n1,0.5,\n2,0.25,0.3\n')
  rows = reproduction.read_metrics(str(path))
  assert rows == [{'round': 1, 'train_loss': 0.5}, {'round': 2, 'train_loss': 0.25,
                                                     'fed_eval_loss': 0.3}]
