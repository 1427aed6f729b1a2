"""The seed article's reproduction: NumPy GD, the grid, and the quick report's claims."""

import numpy as np

from tff_lab import baselines
from tff_lab.baselines import seed_article


def test_gradient_descent_takes_the_mse_gradient_step():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
  theta0 = rng.normal(size=(2, 1))
  thetas, losses = seed_article.gradient_descent(x, y, theta0, 0.1, 3)
  step = theta0 - 0.1 * (2 / 20) * x.T @ (x @ theta0 - y)  # ∇ mean((xθ − y)²)
  np.testing.assert_allclose(thetas[1], step)
  assert losses[0] == np.mean((x @ theta0 - y) ** 2) and len(losses) == 4
  star = np.linalg.lstsq(x, y, rcond=None)[0]
  np.testing.assert_allclose(seed_article.gradient_descent(x, y, theta0, 0.2, 500)[0][-1], star,
                             atol=1e-10)


def test_grid_is_full_batch_fedsgd_with_every_client():
  runs = seed_article.runs(quick=False, seeds=2)
  assert [r.labels['distribution'] for r in runs] == ['iid'] * 2 + ['label_skew'] * 2
  for r in runs:
    c = r.config
    assert c.algorithm == 'fedsgd' and c.server_optimizer == 'sgd'
    assert c.clients_per_round == c.task_options['num_clients']
    assert c.client_batch_size >= c.task_options['examples_per_client']
    assert c.seed == c.task_options['seed'] == r.labels['seed']
  assert {r.config.task_options['iid'] for r in runs} == {True, False}


def test_quick_report_holds_every_claim_and_shows_the_curves(seed_article_quick):
  report = (seed_article_quick / 'report.md').read_text()
  paper = baselines.get_paper('seed_article')
  for claim in paper.claims:
    row = next(line for line in report.splitlines() if line.startswith(f'| `{claim.name}` |'))
    assert row.rstrip().endswith('| ✓ |'), row
    assert claim.tolerance.split()[0] in row
  for section in ('## Claims', "## Our numbers beside the paper's", '## Setup', '## Figures',
                  '## Runs', '| wall time |', '| command | `tff-lab-reproduce seed_article'):
    assert section in report
  assert (seed_article_quick / 'figures' / 'seed_article_curves.png').stat().st_size > 10_000
  assert '](figures/seed_article_curves.png)' in report
