"""The privacy ledger journals each release durably before it is made, counts re-runs, survives a
torn last line, refuses damage, and composes ε as dp-accounting does on the same events."""

import json
import os

import dp_accounting
import pytest

from tff_lab.privacy import accounting
from tff_lab.privacy import ledger as ledger_lib

FIXED = accounting.Mechanism(1.0, 10, 100, 'fixed')
POISSON = accounting.Mechanism(1.0, 10, 100, 'poisson')
DELTA = 1e-5


def _direct(events_and_counts, sampling='fixed', pld=False):
  """ε by dp-accounting, from events written here independently of the ledger."""
  if pld:
    acc = dp_accounting.pld.PLDAccountant()
  else:
    acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=(
        dp_accounting.NeighboringRelation.REPLACE_ONE if sampling == 'fixed'
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE))
  for (z, m, n), count in events_and_counts:
    if sampling == 'fixed':  # replace-one: sensitivity 2C, so z/2 against it
      event = dp_accounting.SampledWithoutReplacementDpEvent(
          n, m, dp_accounting.GaussianDpEvent(z / 2))
    else:
      event = dp_accounting.PoissonSampledDpEvent(m / n, dp_accounting.GaussianDpEvent(z))
    acc.compose(event, count)
  return acc.get_epsilon(DELTA)


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_each_release_is_one_line_with_its_mechanism_and_convention(tmp_path):
  path = str(tmp_path / ledger_lib.LEDGER_FILENAME)
  ledger = ledger_lib.PrivacyLedger(path, FIXED, DELTA)
  assert ledger.epsilon() == 0.0
  returned = ledger.record(1)
  (line,) = _lines(path)
  assert line == returned
  assert line['round'] == 1 and line['attempt'] == 1
  assert (line['noise_multiplier'], line['clients_per_round'], line['population'],
          line['sampling']) == (1.0, 10, 100, 'fixed')
  conv = line['accounting']
  assert (conv['adjacency'], conv['sampling'], conv['accountant'], conv['delta']) == (
      'replace-one', 'fixed', 'rdp', DELTA)
  assert conv['description'] == accounting.describe('fixed', 'rdp', DELTA, 10, 100)


def test_record_is_on_disk_before_it_returns(tmp_path, monkeypatch):
  path = str(tmp_path / 'ledger.jsonl')
  ledger = ledger_lib.PrivacyLedger(path, FIXED, DELTA)
  synced = []
  real_fsync = os.fsync

  def fsync(fd):
    real_fsync(fd)
    if os.path.exists(path):
      synced.append(len(_lines(path)))

  monkeypatch.setattr(os, 'fsync', fsync)
  ledger.record(1)
  ledger.record(2)
  assert synced[0] == 1 and 2 in synced  # the line was complete when it was synced


def test_rerun_rounds_count_again_after_reopening(tmp_path):
  path = str(tmp_path / 'ledger.jsonl')
  first = ledger_lib.PrivacyLedger(path, FIXED, DELTA)
  for r in (1, 2, 3):
    first.record(r)
  again = ledger_lib.PrivacyLedger(path, FIXED, DELTA)  # a resumed process
  for r in (2, 3, 4):
    again.record(r)
  assert again.num_releases == 6
  assert again.repeated_rounds() == {2: 2, 3: 2}
  assert [r['attempt'] for r in _lines(path)] == [1, 1, 1, 2, 2, 1]
  assert again.epsilon() == pytest.approx(_direct([((1.0, 10, 100), 6)]), rel=1e-12)
  summary = again.summary()
  assert summary['releases'] == 6 and summary['rounds_released'] == 4
  assert summary['repeated_rounds'] == {'2': 2, '3': 2}
  assert summary['epsilon'] == again.epsilon()
  assert summary['accounting'] == accounting.Accounting('fixed', 'rdp', DELTA, 10, 100).to_dict()


def test_torn_last_line_is_dropped_and_truncated(tmp_path):
  path = str(tmp_path / 'ledger.jsonl')
  ledger = ledger_lib.PrivacyLedger(path, FIXED, DELTA)
  ledger.record(1)
  ledger.record(2)
  with open(path) as f:
    content = f.read()
  with open(path, 'w') as f:  # a kill in the middle of writing round 3's line
    f.write(content + content.splitlines(keepends=True)[-1][:40])
  reopened = ledger_lib.PrivacyLedger(path, FIXED, DELTA)
  assert reopened.num_releases == 2
  with open(path) as f:
    assert f.read() == content
  reopened.record(3)
  assert [r['round'] for r in _lines(path)] == [1, 2, 3]


def test_damaged_line_before_the_last_is_refused(tmp_path):
  path = str(tmp_path / 'ledger.jsonl')
  ledger = ledger_lib.PrivacyLedger(path, FIXED, DELTA)
  ledger.record(1)
  ledger.record(2)
  lines = open(path).read().splitlines(keepends=True)
  with open(path, 'w') as f:
    f.write(lines[0][:30] + '\n' + lines[1])
  with pytest.raises(ledger_lib.LedgerError, match='line 1 is damaged'):
    ledger_lib.PrivacyLedger(path, FIXED, DELTA)


def test_another_sampling_scheme_is_refused(tmp_path):
  path = str(tmp_path / 'ledger.jsonl')
  ledger_lib.PrivacyLedger(path, FIXED, DELTA).record(1)
  with pytest.raises(ledger_lib.LedgerError, match='adjacency'):
    ledger_lib.PrivacyLedger(path, POISSON, DELTA)
  with pytest.raises(ledger_lib.LedgerError, match='sampling'):
    ledger_lib.PrivacyLedger(path, FIXED, DELTA).record(2, POISSON)


def test_mixed_noise_multipliers_compose(tmp_path):
  ledger = ledger_lib.PrivacyLedger(str(tmp_path / 'l.jsonl'), FIXED, DELTA)
  louder = accounting.Mechanism(2.0, 10, 100, 'fixed')
  for r in range(1, 4):
    ledger.record(r)
  for r in range(4, 6):
    ledger.record(r, louder)
  assert ledger.epsilon() == pytest.approx(
      _direct([((1.0, 10, 100), 3), ((2.0, 10, 100), 2)]), rel=1e-12)


def test_poisson_ledger_with_rdp_and_pld(tmp_path):
  ledger = ledger_lib.PrivacyLedger(str(tmp_path / 'l.jsonl'), POISSON, DELTA, accountant='pld')
  for r in (1, 2, 2, 3):
    ledger.record(r)
  assert ledger.accounting.adjacency == 'add/remove-one'
  pld = ledger.epsilon()
  rdp = ledger.epsilon(accountant='rdp')
  assert pld == pytest.approx(_direct([((1.0, 10, 100), 4)], 'poisson', pld=True), rel=1e-9)
  assert rdp == pytest.approx(_direct([((1.0, 10, 100), 4)], 'poisson'), rel=1e-12)
  assert pld < rdp


@pytest.mark.parametrize('kwargs,match', [
    (dict(delta=0.0), 'delta'),
    (dict(accountant='pld'), 'pld'),
])
def test_bad_settings_are_refused(tmp_path, kwargs, match):
  args = dict(path=str(tmp_path / 'l.jsonl'), mechanism=FIXED, delta=DELTA)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    ledger_lib.PrivacyLedger(**args)


def test_bad_round_is_refused(tmp_path):
  ledger = ledger_lib.PrivacyLedger(str(tmp_path / 'l.jsonl'), FIXED, DELTA)
  with pytest.raises(ValueError, match='round_num'):
    ledger.record(0)
