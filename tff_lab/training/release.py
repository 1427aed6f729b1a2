"""What leaves the training process each round, and what ε it costs.

Without a DP mechanism every metric is written (metrics.csv, TensorBoard, the progress bar,
summary.json) and clients are sampled from the public seed. With one (a DP aggregator, or the
secure runner's DP; `tff_lab.aggregators.dp.mechanism_of`), `RoundRelease` makes the loop honest
about what it releases (issue "Differential privacy that counts every release"):

* **Every release is counted.** Each round's noisy aggregate is journaled in
  `<experiment dir>/privacy_ledger.jsonl` (`tff_lab.privacy.ledger`), fsynced before anything of
  the round leaves the process. A round re-run after a kill is journaled again, and ε is
  composed over the journal: it counts what was released, not the rounds in the final model.
* **Secret sampling.** Clients are sampled from a per-run secret
  (`checkpoints/run_secret`, `tff_lab.privacy.secret`), not the public seed, so the run
  directory's config does not tell who took part in a round (the subsampling amplification then
  holds for a reader of the run directory without the secret). Resume stays exact: the secret is
  kept with the checkpoints. The public seed still determines the initial model, shuffling and
  faults.
* **Metrics the server may release.** `--dp_metrics=withheld` (the default) withholds what the
  noise does not cover, such as training loss, accuracy and example counts summed in the clear,
  or federated evaluation (`tff_lab.privacy.release` classifies every metric). `public` releases
  them, and summary.json then says that ε does not cover them.
* **ε that names its accounting.** summary.json's `privacy` section gives the adjacency, the
  sampling, the accountant and δ with ε, the releases counted (and rounds counted more than once),
  what ε covers, and warnings for a δ that is too large or an ε above 10. The run logs each
  warning once, as soon as it is known: the δ one when the release is set up (before round 1),
  the ε one in the first round whose ε exceeds 10 (`accounting.delta_warnings`,
  `accounting.epsilon_warnings`).
"""

import collections
import os
from typing import Any, Optional

from absl import logging

from tff_lab.aggregators import dp as dp_lib
from tff_lab.privacy import accounting
from tff_lab.privacy import ledger as ledger_lib
from tff_lab.privacy import release as release_lib
from tff_lab.privacy import secret as secret_lib


class RoundRelease:
  """The loop's release of round results: everything without DP, the DP policy with it."""

  def __init__(self, config, mechanism: Optional[dp_lib.GaussianMechanism], exp_dir: str,
               ckpt_dir: str, population: int):
    """Sets up the ledger, the sampling secret and the metrics policy (DP only).

    Args:
      config: The experiment's config (`client_sampling`, `dp_metrics`, `dp_delta`, `seed`).
      mechanism: The DP mechanism the run's runner applies, or None.
      exp_dir: The experiment directory (the ledger's home).
      ckpt_dir: The checkpoint directory (the secret's home).
      population: N, the clients sampled from.
    """
    self.dp = mechanism is not None
    self.sampling_entropy = config.seed
    self._warned = set()  # the kinds of warning ('delta', 'epsilon') logged so far
    self.ledger = self.policy = None
    if not self.dp:
      return
    self.sampling_entropy = secret_lib.sampling_entropy(
        secret_lib.load_or_create_run_secret(ckpt_dir))
    self.delta = config.dp_delta or accounting.default_delta(population)
    self.population = population
    self.ledger = ledger_lib.PrivacyLedger(
        os.path.join(exp_dir, ledger_lib.LEDGER_FILENAME),
        accounting.Mechanism(mechanism.noise_multiplier, config.clients_per_round, population,
                             sampling=config.client_sampling), self.delta)
    self.policy = release_lib.MetricsPolicy(
        config.dp_metrics, sampling=config.client_sampling,
        dp='adaptive' if mechanism.adaptive else 'fixed')
    self._warn_once('delta', accounting.delta_warnings(self.delta, population))

  def _warn_once(self, kind: str, warnings: list[str]) -> None:
    """Logs `warnings` (absl, WARNING) unless a warning of this kind was logged already."""
    if warnings and kind not in self._warned:
      self._warned.add(kind)
      for warning in warnings:
        logging.warning('%s', warning)

  def record(self, round_num: int) -> None:
    """Journals round `round_num`'s noisy release; call it before anything of the round leaves."""
    if self.dp:
      self.ledger.record(round_num)

  def epsilon_metrics(self) -> 'collections.OrderedDict[str, Any]':
    """`dp_epsilon` (over every release journaled), `dp_delta`, and `dp_accounting` (the
    convention, in words, so that no row of metrics.csv carries an ε without it); nothing
    without DP. The first time ε exceeds `accounting.WARN_EPSILON`, logs a warning."""
    if not self.dp:
      return collections.OrderedDict()
    epsilon = self.ledger.epsilon()
    self._warn_once('epsilon', accounting.epsilon_warnings(epsilon))
    return collections.OrderedDict(dp_epsilon=epsilon, dp_delta=self.delta,
                                   dp_accounting=self.ledger.accounting.text())

  def apply(self, metrics) -> 'collections.OrderedDict[str, Any]':
    """The metrics that may leave the process (all of them without DP)."""
    if not self.dp:
      return collections.OrderedDict(metrics)
    return self.policy.apply(metrics)

  def summary(self) -> Optional[dict]:
    """summary.json's `privacy` section (None without DP), with every warning of the run's
    (ε, δ); logs those not logged during the run."""
    if not self.dp:
      return None
    epsilon = self.ledger.epsilon()
    self._warn_once('epsilon', accounting.epsilon_warnings(epsilon))
    warnings = accounting.dp_warnings(epsilon, self.delta, self.population)
    return dict(self.ledger.summary(), metrics=self.policy.summary(), warnings=warnings)
