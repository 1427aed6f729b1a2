"""FedProx's reproduction: the grid encodes the paper's setup; the quick report's claims."""

import collections
import os

import numpy as np
import tensorflow as tf

from tff_lab.baselines import fedprox
from tff_lab.data import synthetic


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
      assert c.algorithm_hparams.get('mu', 0.0) == {'fedprox_mu0': 0.0, 'fedprox_mu1': 1.0}[
          r.labels['method']]
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


def _softmax_loss_and_gradient(w, b, x, y):
  logits = x @ w + b
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  loss = -np.mean(np.log(p[np.arange(len(y)), y]))
  residual = p - np.eye(w.shape[1])[y]
  return loss, np.concatenate([(x.T @ residual / len(y)).ravel(), residual.mean(axis=0)])


def test_analysis_is_the_papers_loss_and_dissimilarity_in_numpy(fedprox_quick):
  """f(w) = Σ n_k F_k / Σ n_k over all 30 devices; mean_k ‖∇F_k − ∇f‖², ∇f n_k-weighted."""
  run = fedprox_quick.results.select(method='fedavg', stragglers=90)[0]
  model = tf.keras.models.load_model(os.path.join(run.directory, 'final_model.keras'),
                                     compile=False)
  w, b = (v.astype(np.float64) for v in model.get_weights())
  options = run.run.config.task_options
  devices = synthetic.generate_synthetic(alpha=options['alpha'], beta=options['beta'],
                                         iid=options['iid'], num_devices=options['num_devices'],
                                         train_fraction=options['train_fraction'],
                                         seed=options['seed'])
  losses, grads = zip(*(_softmax_loss_and_gradient(w, b, d.x_train.astype(np.float64),
                                                   d.y_train) for d in devices))
  n = np.array([len(d.y_train) for d in devices], np.float64)
  grads = np.stack(grads)
  mean_grad = n @ grads / n.sum()
  np.testing.assert_allclose(run.analysis['train_loss_all_devices'], n @ losses / n.sum(),
                             rtol=1e-5)
  np.testing.assert_allclose(run.analysis['dissimilarity'],
                             np.mean(np.sum((grads - mean_grad) ** 2, axis=1)), rtol=1e-4)
