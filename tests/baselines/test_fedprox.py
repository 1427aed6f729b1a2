"""FedProx's reproduction: the grid encodes the paper's setup; the quick report's claims."""

import collections

from tff_lab.baselines import fedprox


def test_full_grid_has_the_papers_settings():
  runs = fedprox.runs(quick=False, seeds=10)
  settings = {(r.labels['dataset'], r.labels['method'], r.labels['stragglers']) for r in runs}
  assert len(settings) == 15 and len(runs) == 150
  assert {s for d, m, s in settings if d == 'synthetic_1_1'} == {0, 50, 90}
  assert {d for d, _, _ in settings} == set(fedprox.DATASETS)
  for r in runs:
    c = r.config
    assert (c.rounds, c.client_epochs, c.clients_per_round, c.client_learning_rate,
            c.client_batch_size) == (200, 20, 10, 0.01, 10)
    assert c.task_options['num_devices'] == 30
    assert c.seed == c.task_options['seed'] == r.labels['seed']
    fraction = r.labels['stragglers'] / 100
    if r.labels['method'] == 'fedavg':  # drops its stragglers
      assert (c.algorithm, c.dropout_fraction, c.straggler_fraction) == ('fedavg', fraction, 0)
    else:  # keeps their partial work
      assert (c.algorithm, c.dropout_fraction, c.straggler_fraction) == ('fedprox', 0, fraction)
      assert c.mu == {'fedprox_mu0': 0.0, 'fedprox_mu1': 1.0}[r.labels['method']]
  per_setting = collections.Counter((r.labels['dataset'], r.labels['method'],
                                     r.labels['stragglers']) for r in runs)
  assert set(per_setting.values()) == {10}  # every method on the same 10 seeds: paired


def test_quick_reproduction_holds_its_quick_claims(fedprox_quick):
  outcomes = {c.name: (c, o) for c, o in fedprox_quick.claims}
  assert set(outcomes) == {c.name for c in fedprox.CLAIMS}
  quick = [name for name, (c, _) in outcomes.items() if c.at_quick_scale]
  assert quick
  for name in quick:
    assert outcomes[name][1].held is True, (name, outcomes[name][1].ours)
  # Claims needing settings outside the quick grid say so rather than pass or fail.
  assert outcomes['mu1_slower_on_iid'][1].held is None
  assert len(fedprox_quick.trained) == 6 and not fedprox_quick.reused


def test_quick_report_structure(fedprox_quick):
  with open(fedprox_quick.path) as f:
    report = f.read()
  assert 'QUICK' in report and 'not yet run' in report
  for claim in fedprox.CLAIMS:
    assert f'| `{claim.name}` |' in report
  for figure in ('fedprox_fig1.png', 'fedprox_fig2.png'):
    assert f'](figures/{figure})' in report
  assert '| Fig. 1 | Synthetic(1,1) | 90% | FedAvg (drops stragglers) |' in report
  for r in fedprox_quick.results.runs:  # the analysis as the paper logs it, finite
    assert r.analysis['train_loss_all_devices'] > 0 and r.analysis['dissimilarity'] > 0
