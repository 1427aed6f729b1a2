"""The privacy ledger: a journal of every noisy release, from which ε is computed.

The accountant's state is what was actually released, not the round counter. Each DP round
appends one JSON line (round, attempt, mechanism, accounting convention, time) and fsyncs it
*before* the round's results leave the process: before metrics, TensorBoard, checkpoints or the
console see them. So:

* A round re-run after a kill (the rounds after the last checkpoint run again, with fresh noise)
  is recorded again and counts twice: its first attempt may have reached TensorBoard or a reader.
* A kill after the line is written but before the results leave counts a release that never
  happened: conservative.
* A kill while the line is being written leaves a torn last line. Its release never happened,
  since the line precedes it, so the torn line is dropped (and truncated away when the ledger is
  reopened). A damaged line anywhere else is refused: the journal can no longer be trusted.

ε composes every recorded release with dp-accounting (`tff_lab.privacy.accounting`): with RDP,
the one-round RDP curve of each distinct mechanism, times the number of its releases, summed (RDP
composes additively; Mironov, "Rényi Differential Privacy", CSF 2017, arXiv:1702.07476); with PLD
(Poisson sampling only), each distinct mechanism self-composed that many times (Koskela, Jälkö,
Honkela, AISTATS 2020, arXiv:1906.03049; dp-accounting's PLD accountant).

BUILD.md ("DP: why a release journal") explains why tff_lab counts releases rather than making
re-runs repeat the same noise.
"""

import collections
import datetime
import json
import os
from typing import Any, Optional

import dp_accounting

from tff_lab import files
from tff_lab.privacy import accounting

LEDGER_FILENAME = 'privacy_ledger.jsonl'
_FORMAT = 1


class LedgerError(ValueError):
  """The ledger file is damaged (other than a torn last line) or contradicts its settings."""


class PrivacyLedger:
  """The journal of one experiment's noisy releases, and ε over them.

  Usage, once per DP round, right after the noisy aggregate is computed:

      ledger = PrivacyLedger(os.path.join(exp_dir, LEDGER_FILENAME), mechanism, delta)
      ...
      ledger.record(round_num)          # fsynced; only then may the round's results leave
      metrics['dp_epsilon'] = ledger.epsilon()

  Attributes:
    path: The JSON-lines file.
    mechanism: The default `accounting.Mechanism` of `record`.
    accounting: The `accounting.Accounting` of `epsilon()` (convention, δ).
  """

  def __init__(self, path: str, mechanism: accounting.Mechanism, delta: float,
               accountant: str = 'rdp'):
    """Opens (or creates) the ledger at `path`.

    Args:
      path: The ledger file (conventionally `<experiment dir>/privacy_ledger.jsonl`).
      mechanism: The mechanism of each round (noise multiplier, m, N, sampling).
      delta: δ of the ε reported by `epsilon()`.
      accountant: 'rdp', or 'pld' (Poisson sampling only).

    Raises:
      LedgerError: The file has a damaged line before its last, or records another sampling
        scheme (adjacency) than `mechanism`'s.
      ValueError: For invalid mechanism arguments or δ.
    """
    self.path = path
    self.mechanism = mechanism
    self.accounting = accounting.Accounting(mechanism.sampling, accountant, delta,
                                            mechanism.clients_per_round, mechanism.population)
    self._records: list[dict[str, Any]] = []
    self._attempts: collections.Counter = collections.Counter()
    self._rdp_cache: dict[accounting.Mechanism, Any] = {}
    if os.path.exists(path):
      self._load()

  def _load(self) -> None:
    with open(self.path, 'rb') as f:
      content = f.read()
    lines = content.split(b'\n')
    complete, tail = lines[:-1], lines[-1]  # tail: b'' when the file ends with a newline
    records = []
    for i, line in enumerate(complete):
      try:
        records.append(self._check_record(json.loads(line)))
      except LedgerError:
        raise
      except (ValueError, KeyError, TypeError) as e:  # a complete line: damaged, not torn
        raise LedgerError(f'{self.path}: line {i + 1} is damaged ({e}); the record of '
                          'releases cannot be trusted') from None
    if tail:  # torn by a kill during `record`: never released; drop it for good
      with open(self.path, 'r+b') as f:
        f.truncate(len(content) - len(tail))
        f.flush()
        os.fsync(f.fileno())
    for record in records:
      self._records.append(record)
      self._attempts[record['round']] += 1

  def _check_record(self, record: dict[str, Any]) -> dict[str, Any]:
    mechanism = accounting.Mechanism(record['noise_multiplier'], record['clients_per_round'],
                                     record['population'], record['sampling'])
    if mechanism.sampling != self.mechanism.sampling:
      raise LedgerError(
          f'{self.path} records sampling={mechanism.sampling!r} releases; this run has '
          f'sampling={self.mechanism.sampling!r}, whose ε holds for another adjacency')
    if not isinstance(record['round'], int):
      raise TypeError(f'round is {record["round"]!r}')
    return record

  def record(self, round_num: int, mechanism: Optional[accounting.Mechanism] = None
             ) -> dict[str, Any]:
    """Journals one noisy release of round `round_num`; returns the record written.

    Call it after the noisy aggregate exists and before anything computed from it is written or
    shown. It returns after the line is on disk (fsync).

    Args:
      round_num: The round released (1-based); a round recorded before counts again.
      mechanism: This release's mechanism, if not the ledger's (same sampling scheme).

    Raises:
      LedgerError: A mechanism with another sampling scheme.
    """
    mechanism = self.mechanism if mechanism is None else mechanism
    if mechanism.sampling != self.mechanism.sampling:
      raise LedgerError(f'cannot record a sampling={mechanism.sampling!r} release in a '
                        f'sampling={self.mechanism.sampling!r} ledger')
    if not isinstance(round_num, int) or round_num < 1:
      raise ValueError(f'round_num must be a positive integer; got {round_num!r}')
    conv = accounting.Accounting(mechanism.sampling, self.accounting.accountant,
                                 self.accounting.delta, mechanism.clients_per_round,
                                 mechanism.population)
    record = dict(format=_FORMAT, round=round_num, attempt=self._attempts[round_num] + 1,
                  **mechanism.to_dict(), accounting=conv.to_dict(),
                  recorded_at=datetime.datetime.now(datetime.timezone.utc).isoformat())
    line = (json.dumps(record, sort_keys=True) + '\n').encode()
    new = not os.path.exists(self.path)
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      written = os.write(fd, line)
      while written < len(line):  # short writes are rare but allowed
        written += os.write(fd, line[written:])
      os.fsync(fd)
    finally:
      os.close(fd)
    if new:
      files.fsync_dir(os.path.dirname(self.path))
    self._records.append(record)
    self._attempts[round_num] += 1
    return record

  @property
  def releases(self) -> tuple[dict[str, Any], ...]:
    """Every recorded release, in order."""
    return tuple(self._records)

  @property
  def num_releases(self) -> int:
    return len(self._records)

  def repeated_rounds(self) -> dict[int, int]:
    """{round: times released} for the rounds released more than once (re-runs)."""
    return {r: n for r, n in sorted(self._attempts.items()) if n > 1}

  def _counts(self) -> 'collections.Counter[accounting.Mechanism]':
    return collections.Counter(
        accounting.Mechanism(r['noise_multiplier'], r['clients_per_round'], r['population'],
                             r['sampling']) for r in self._records)

  def epsilon(self, delta: Optional[float] = None, accountant: Optional[str] = None) -> float:
    """ε at `delta` (default: the ledger's) of every release recorded; 0 with none.

    Args:
      delta: δ of the guarantee; the ledger's δ by default.
      accountant: 'rdp' or 'pld'; the ledger's by default.
    """
    delta = self.accounting.delta if delta is None else delta
    accountant = self.accounting.accountant if accountant is None else accountant
    accounting.Accounting(self.mechanism.sampling, accountant, delta,
                          self.mechanism.clients_per_round, self.mechanism.population)  # checks
    counts = self._counts()
    if not counts:
      return 0.0
    if accountant == 'pld':
      acc = accounting.make_accountant(self.mechanism.sampling, 'pld')
      for mechanism, count in counts.items():
        acc.compose(mechanism.event(), count)
      return float(acc.get_epsilon(delta))
    total = None
    for mechanism, count in counts.items():
      if mechanism not in self._rdp_cache:
        one = accounting.make_accountant(mechanism.sampling, 'rdp').compose(mechanism.event())
        self._rdp_cache[mechanism] = (one.orders, one.rdp)
      orders, rdp = self._rdp_cache[mechanism]
      total = count * rdp if total is None else total + count * rdp
    eps, _ = dp_accounting.rdp.compute_epsilon(orders, total, delta)
    return float(eps)

  def summary(self) -> dict[str, Any]:
    """What summary.json should say about the releases and their ε."""
    return dict(ledger=os.path.basename(self.path), releases=self.num_releases,
                rounds_released=len(self._attempts),
                repeated_rounds={str(r): n for r, n in self.repeated_rounds().items()},
                epsilon=self.epsilon(), accounting=self.accounting.to_dict(),
                mechanism=self.mechanism.to_dict())
