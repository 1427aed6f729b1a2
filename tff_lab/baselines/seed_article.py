"""The seed article's §4–§5: FedSGD on its linear/MSE example is centralised gradient descent.

The article (shared/seed, "Lepton AI 联邦学习隐私保护", §4.1–§4.3) writes the federated update as

    θ^(t+1) = θ^(t) − α · (1/N) Σ_{i=1..N} ∇_θ L_i(θ^(t)),

derives it (§4.2) as one step of gradient descent on L(θ) = (1/N) Σ_i L_i(θ), and instantiates it
(§4.3) with the linear model f(x; θ) = θᵀx, y ∈ {−1, +1} and the squared error ½(f − y)². It gives
no numbers, so the checks are the mathematics it states:

  * FedSGD with every client in every round (`tff_lab.algorithms.fedsgd`, TFF's FedSGD) follows
    the same iterates as gradient descent computed here independently in NumPy (float64) on the
    pooled training data of the `seed_linear` task, from the same initial θ;
  * the iterates converge to the least-squares solution (`np.linalg.lstsq`), since the loss is a
    convex quadratic and α < 2/λ_max of its Hessian.

Two runs per seed: IID clients and label-skewed clients (FedSGD equals GD whatever the split).
"""

import collections
import functools
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from tff_lab import training  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_lab.baselines import reproduction  # pylint: disable=g-import-not-at-top
from tff_lab.tasks import registry as tasks_registry  # pylint: disable=g-import-not-at-top

H = reproduction.Hyperparameter

NUM_CLIENTS = 10
EXAMPLES_PER_CLIENT = 50
TEST_FRACTION = 0.2
# Keras' MSE is mean((f − y)²), twice the article's ½(f − y)²: our α = 0.2 is the article's 0.4.
LEARNING_RATE = 0.2
ROUNDS = {False: 100, True: 30}
DISTRIBUTIONS = collections.OrderedDict(iid=True, label_skew=False)
# float32 (TFF) against float64 (NumPy) over ≤100 steps: observed ≤1e-6 relative; 1e-5 leaves room.
EQUALITY_TOLERANCE = 1e-5
# ‖θ_T − θ*‖ / ‖θ*‖ after the rounds run: the contraction factor ≤ 0.63 per step makes this ~1e-6
# at 30 rounds in exact arithmetic (~1e-8 measured, float32's floor), so 1e-4 leaves a margin.
LSTSQ_TOLERANCE = 1e-4
# A GD step with α < 2/λ_max never increases a quadratic; allow float32 round-off.
MONOTONE_TOLERANCE = 1e-6


def _task_options(iid: bool, seed: int) -> dict:
  return dict(num_clients=NUM_CLIENTS, examples_per_client=EXAMPLES_PER_CLIENT, noise=1.0, iid=iid,
              model='linear', test_fraction=TEST_FRACTION, seed=seed)


def runs(quick: bool, seeds: int) -> list[reproduction.Run]:
  """IID and label-skewed clients (quick: IID only), `seeds` data seeds each."""
  grid = []
  rounds = ROUNDS[quick]
  for distribution, iid in DISTRIBUTIONS.items():
    if quick and not iid:
      continue
    for seed in range(seeds):
      config = training.ExperimentConfig(
          task='seed_linear', task_options=_task_options(iid, seed), algorithm='fedsgd',
          server_optimizer='sgd', server_learning_rate=LEARNING_RATE, rounds=rounds,
          clients_per_round=NUM_CLIENTS, client_epochs=1, client_batch_size=EXAMPLES_PER_CLIENT,
          eval_every=rounds, checkpoint_every=20, seed=seed)
      grid.append(reproduction.Run(name=f'{distribution}_seed{seed}', config=config,
                                   labels=dict(distribution=distribution, seed=seed)))
  return grid


def setup(quick: bool) -> list[reproduction.Hyperparameter]:
  return [
      H('model', 'f(x; θ) = θᵀx, θ ∈ R², no bias', '§4.3.2'),
      H('loss', 'MSE; Keras mean((f−y)²) = 2 × the article\'s ½(f−y)²', '§4.3.3'),
      H('data', f'seed_linear: y ∈ {{−1,+1}}, x = y·(1, 0.5) + N(0, I₂); {NUM_CLIENTS} clients × '
        f'{EXAMPLES_PER_CLIENT} examples, {TEST_FRACTION:.0%} held out per client',
        '§4.3.1 (two features, y ∈ {−1,+1}); the article leaves the data unspecified: '
        'tff_lab/data/seed_linear.py fixes it'),
      H('client distributions', 'IID' if quick else 'IID, label skew (P(y=+1) from 0.1 to 0.9)',
        'ours: FedSGD = GD holds for any split'),
      H('algorithm', 'FedSGD (each client: the gradient of its mean loss over all its examples; '
        'server: example-weighted mean, one SGD step)', '§4.1 update equation'),
      H('clients per round', f'{NUM_CLIENTS} of {NUM_CLIENTS} (all)', '§4.1: Σ over i = 1..N'),
      H('learning rate α', f'{LEARNING_RATE} (= {2 * LEARNING_RATE:g} in the article\'s ½-scaled '
        'loss)', 'not given in §4 (§5.2\'s 0.01 would need ~10⁴ rounds); ours, < 2/λ_max ≈ 0.45'),
      H('rounds', ROUNDS[quick], 'ours: enough to reach float32 precision'),
      H('client weighting', 'n_k (TFF FedSGD); every client holds 40 training examples, so this '
        'is the article\'s 1/N', '§4.1'),
      H('initial θ', 'Keras Glorot-uniform under the run\'s seed, shared with the NumPy GD',
        'tff_lab.training.loop.initial_model_weights'),
  ]


def _pooled_train(task) -> tuple[np.ndarray, np.ndarray]:
  xs, ys = [], []
  for cid in task.train_data.client_ids:
    for element in task.train_data.create_tf_dataset_for_client(cid).as_numpy_iterator():
      xs.append(element['x'])
      ys.append(element['y'])
  return np.asarray(xs, np.float64), np.asarray(ys, np.float64).reshape(-1, 1)


def gradient_descent(x: np.ndarray, y: np.ndarray, theta0: np.ndarray, learning_rate: float,
                     steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Full-batch GD on mean((xθ − y)²) in float64: the iterates θ_0..θ_T and their losses."""
  thetas = [np.asarray(theta0, np.float64)]
  for _ in range(steps):
    theta = thetas[-1]
    thetas.append(theta - learning_rate * 2.0 * x.T @ (x @ theta - y) / len(y))
  thetas = np.stack(thetas)
  losses = np.array([np.mean((x @ t - y) ** 2) for t in thetas])
  return thetas, losses


def analyse_run(result: reproduction.RunResult) -> dict:
  """GD in NumPy from the run's task data and initial θ, least squares, and the run's final θ."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tff_lab.training import loop
  config = result.run.config
  task = tasks_registry.create_task(config.task, config.task_options)
  x, y = _pooled_train(task)
  theta0 = np.asarray(loop.initial_model_weights(task, config.seed).trainable[0], np.float64)
  thetas, gd_losses = gradient_descent(x, y, theta0, config.server_learning_rate, config.rounds)
  theta_star = np.linalg.lstsq(x, y, rcond=None)[0]
  model = tf.keras.models.load_model(os.path.join(result.directory, 'final_model.keras'),
                                     compile=False)
  theta_fed = np.asarray(model.get_weights()[0], np.float64)
  hessian_eigenvalues = np.linalg.eigvalsh(2.0 * x.T @ x / len(y))
  return dict(
      gd_losses=gd_losses.tolist(), theta_gd=thetas[-1].ravel().tolist(),
      theta_fed=theta_fed.ravel().tolist(), theta_star=theta_star.ravel().tolist(),
      theta0=theta0.ravel().tolist(), loss_star=float(np.mean((x @ theta_star - y) ** 2)),
      loss_fed_final=float(np.mean((x @ theta_fed - y) ** 2)),
      hessian_eigenvalues=hessian_eigenvalues.tolist(), num_train=len(y))


def _fed_losses(result: reproduction.RunResult) -> np.ndarray:
  """L(θ_0..θ_T) of the federated run: round t logs L(θ_{t−1}); L(θ_T) from its final θ."""
  return np.append(result.series('train_loss')[1], result.analysis['loss_fed_final'])


def _loss_gap(result) -> float:
  gd = np.asarray(result.analysis['gd_losses'])
  return float(np.max(np.abs(_fed_losses(result) - gd) / gd))


def _theta_gap(result) -> float:
  a = result.analysis
  return float(np.linalg.norm(np.subtract(a['theta_fed'], a['theta_gd'])) /
               np.linalg.norm(a['theta_gd']))


def _lstsq_gap(result, which: str) -> float:
  a = result.analysis
  return float(np.linalg.norm(np.subtract(a[which], a['theta_star'])) /
               np.linalg.norm(a['theta_star']))


def _check_equals_gd(results: reproduction.Results) -> reproduction.ClaimResult:
  loss_gaps = [_loss_gap(r) for r in results.runs]
  theta_gaps = [_theta_gap(r) for r in results.runs]
  worst = max(max(loss_gaps), max(theta_gaps))
  return reproduction.ClaimResult(
      held=worst <= EQUALITY_TOLERANCE,
      ours=f'over {len(results.runs)} runs: max relative loss gap {max(loss_gaps):.1e} '
           f'(every round), max ‖θ_fed − θ_GD‖/‖θ_GD‖ at the last round {max(theta_gaps):.1e}')


def _check_least_squares(results: reproduction.Results) -> reproduction.ClaimResult:
  fed = [_lstsq_gap(r, 'theta_fed') for r in results.runs]
  gd = [_lstsq_gap(r, 'theta_gd') for r in results.runs]
  return reproduction.ClaimResult(
      held=max(fed) <= LSTSQ_TOLERANCE,
      ours=f'max ‖θ_T − θ*‖/‖θ*‖: FedSGD {max(fed):.1e}, NumPy GD {max(gd):.1e} '
           f'({len(results.runs)} runs)')


def _check_monotone(results: reproduction.Results) -> reproduction.ClaimResult:
  worst = 0.0
  for r in results.runs:
    losses = _fed_losses(r)
    worst = max(worst, float(np.max((losses[1:] - losses[:-1]) / losses[:-1])))
  alpha = max(r.run.config.server_learning_rate for r in results.runs)
  lam = max(max(r.analysis['hessian_eigenvalues']) for r in results.runs)
  return reproduction.ClaimResult(
      held=worst <= MONOTONE_TOLERANCE and alpha < 2 / lam,
      ours=f'largest relative increase of L between rounds {worst:+.1e}; α = {alpha:g} < '
           f'2/λ_max = {2 / lam:.3f}')


CLAIMS = (
    reproduction.Claim(
        name='fedsgd_equals_gd',
        statement='θ^(t+1) = θ^(t) − α(1/N)Σ∇L_i(θ^(t)) is gradient descent on L(θ) = '
                  '(1/N)ΣL_i(θ): FedSGD with all clients follows centralised GD\'s iterates',
        source='§4.1–§4.2 (update equation and its derivation)',
        tolerance=f'relative gap ≤ {EQUALITY_TOLERANCE:g} in L(θ_t) at every round and in θ_T '
                  '(float32 TFF against float64 NumPy)',
        check=_check_equals_gd, at_quick_scale=True),
    reproduction.Claim(
        name='converges_to_least_squares',
        statement='gradient descent on the convex MSE of §4.3 reaches its minimiser, the '
                  'least-squares θ*',
        source='§4.3.3–§4.3.5 (MSE, its gradient, the update); θ* by np.linalg.lstsq',
        tolerance=f'‖θ_T − θ*‖/‖θ*‖ ≤ {LSTSQ_TOLERANCE:g}',
        check=_check_least_squares, at_quick_scale=True),
    reproduction.Claim(
        name='loss_decreases_every_round',
        statement='each round lowers the training loss (a GD step with α < 2/λ_max on a '
                  'quadratic)',
        source='§4.2 step 3 (gradient descent); descent lemma',
        tolerance=f'L(θ_(t+1)) ≤ (1 + {MONOTONE_TOLERANCE:g})·L(θ_t)',
        check=_check_monotone, at_quick_scale=True),
)

PUBLISHED = (
    reproduction.Published('federated update', 'θ^(t+1) = θ^(t) − α (1/N) Σ_i ∇_θ L_i^(t)', '§4.1'),
    reproduction.Published('its derivation', '∇L(θ) = (1/N) Σ_i ∇L_i(θ); θ^(t+1) = θ^(t) − α∇L(θ)',
                           '§4.2'),
    reproduction.Published('example', 'f(x;θ) = θᵀx, L_i = ½(f(x_i;θ) − y_i)², ∇L_i = x_i(f − '
                           'y_i), y ∈ {−1,+1}, two features', '§4.3'),
    reproduction.Published('numbers', 'none: §5.4 only says the run prints updates and that the '
                           'model can be evaluated', '§5.4'),
)


def tables(results: reproduction.Results) -> str:
  lines = ['| quantity | the article | ' + ' | '.join(f'ours, {d}' for d in DISTRIBUTIONS
                                                     if results.select(distribution=d)) + ' |',
           '|---|---|' + '---|' * len([d for d in DISTRIBUTIONS
                                       if results.select(distribution=d)])]
  groups = [results.select(distribution=d) for d in DISTRIBUTIONS if results.select(distribution=d)]

  def row(name, paper, fn, digits=4, fmt=None):
    cells = []
    for runs_ in groups:
      values = [fn(r) for r in runs_]
      cells.append(fmt(values) if fmt else reproduction.mean_std(values, digits))
    lines.append(f'| {name} | {paper} | ' + ' | '.join(cells) + ' |')

  sci = lambda vs: f'max {max(vs):.1e} (n={len(vs)})'
  row('runs (seeds)', '—', lambda r: 1, fmt=lambda vs: str(len(vs)))
  row('rounds', '—', lambda r: r.run.config.rounds, fmt=lambda vs: str(int(vs[0])))
  row('training loss L(θ_0) (MSE)', '—', lambda r: r.analysis['gd_losses'][0])
  row('training loss L(θ_T), FedSGD', '—', lambda r: r.analysis['loss_fed_final'], 6)
  row('training loss L(θ*), least squares', '—', lambda r: r.analysis['loss_star'], 6)
  row('max relative gap FedSGD vs GD in L(θ_t), all t', '0 (same iterates, §4.2)', _loss_gap,
      fmt=sci)
  row('‖θ_FedSGD − θ_GD‖/‖θ_GD‖ at T', '0 (§4.2)', _theta_gap, fmt=sci)
  row('‖θ_FedSGD − θ*‖/‖θ*‖ at T', '→ 0 (GD on a convex quadratic)',
      functools.partial(_lstsq_gap, which='theta_fed'), fmt=sci)
  row('Hessian eigenvalues of L (λ_min, λ_max)', '—',
      lambda r: r.analysis['hessian_eigenvalues'],
      fmt=lambda vs: ', '.join(f'{np.mean([v[i] for v in vs]):.3f}' for i in range(2)))
  row('test accuracy of sign(θ_Tᵀx) (pooled test set)', '— (§5.4: "evaluate")',
      lambda r: r.final('central_eval_accuracy'))
  return '\n'.join(lines)


def figures(results: reproduction.Results, out_dir: str) -> list[tuple[str, str]]:
  """The curves: L(θ_t) of FedSGD over NumPy GD, and the gap to the least-squares loss."""
  out = []
  groups = [(d, results.select(distribution=d)) for d in DISTRIBUTIONS]
  groups = [(d, g) for d, g in groups if g]
  fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.8 * len(groups)), squeeze=False)
  for (distribution, runs_), (ax_loss, ax_gap) in zip(groups, axes):
    for i, r in enumerate(runs_):
      fed = _fed_losses(r)
      gd = np.asarray(r.analysis['gd_losses'])
      t = np.arange(len(gd))
      label = i == 0
      ax_loss.plot(t, gd, '-', color='C0', alpha=0.6, label='NumPy GD (float64)' if label else None)
      ax_loss.plot(t, fed, 'o', color='C1', markersize=2.5, alpha=0.7,
                   label='FedSGD through TFF' if label else None)
      ax_loss.axhline(r.analysis['loss_star'], color='k', ls=':', lw=0.8,
                      label='least squares L(θ*)' if label else None)
      excess_gd, excess_fed = gd - r.analysis['loss_star'], fed - r.analysis['loss_star']
      keep_gd, keep_fed = excess_gd > 0, excess_fed > 0  # a log axis drops exact zeros
      ax_gap.semilogy(t[keep_gd], excess_gd[keep_gd], '-', color='C0', alpha=0.6,
                      label='NumPy GD' if label else None)
      ax_gap.semilogy(t[keep_fed], excess_fed[keep_fed], 'o', color='C1', markersize=2.5,
                      alpha=0.7, label='FedSGD' if label else None)
      if label:
        ax_gap.axhline(np.finfo(np.float32).eps * r.analysis['loss_star'], color='k', ls=':',
                       lw=0.8, label='float32 resolution of L(θ*)')
    ax_loss.set_title(f'{distribution} clients: training loss ({len(runs_)} seeds)')
    ax_loss.set_xlabel('round t')
    ax_loss.set_ylabel('L(θ_t) = mean (θᵀx − y)²')
    ax_gap.set_title(f'{distribution}: L(θ_t) − L(θ*)')
    ax_gap.set_xlabel('round t')
    ax_gap.set_ylabel('excess loss (log)')
    for ax in (ax_loss, ax_gap):
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
  fig.tight_layout()
  name = 'seed_article_curves.png'
  fig.savefig(os.path.join(out_dir, name), dpi=110)
  plt.close(fig)
  out.append((name, 'FedSGD (markers) on the NumPy GD curve (line) and the excess loss over the '
              'least-squares minimum, falling to float32 round-off'))
  return out


NOTES = (
    'The article\'s §5.2 code trains a sigmoid unit with binary cross-entropy through an '
    'invented API (`tff.learning.keras_optimizer.create_optimizer`); §4\'s mathematics is the '
    'linear/MSE model reproduced here (`seed_linear` with `model=logistic` is the §5.2 model).',
    'FedSGD\'s per-round training loss (metrics.csv `train_loss`) is measured by TFF at the '
    'broadcast θ_{t−1}, in float32 (hence the excess-loss floor near float32\'s resolution); '
    'L(θ_T) is computed in float64 from the saved final model (the last marker).',
)

PAPER = reproduction.Paper(
    name='seed_article', title='the seed article §4–§5 (FedSGD = gradient descent on the linear '
    'example)',
    citation='禅与计算机程序设计艺术, "Lepton AI 联邦学习隐私保护技术" (shared/seed), §4 数学模型和公式 '
             'and §5 项目实践.',
    runs=runs, setup=setup, published=PUBLISHED, claims=CLAIMS, tables=tables, figures=figures,
    default_seeds=5, quick_seeds=1, analyse_run=analyse_run, notes=NOTES)
