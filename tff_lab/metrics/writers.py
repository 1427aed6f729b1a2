"""Where round metrics go: metrics.csv (one row per round) and TensorBoard.

The CSV is the record a researcher loads into pandas. It is append-only during a run (flushed
every row), and `truncate_after(round)` rewrites it atomically on resume so that rows written
after the last checkpoint (or half-written by a kill) are dropped before those rounds are re-run:
a resumed run ends with exactly one row per round. A metric that first appears in a later round
(e.g. evaluation columns) extends the header by rewriting the file.
"""

import csv
import math
import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf


def _fmt(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ''
  if isinstance(value, float):
    return repr(value)
  return str(value)


class CSVMetricsWriter:
  """Appends one row per round to a CSV file whose first column is `round`."""

  def __init__(self, path: str):
    self.path = path
    self._fields: list[str] = []
    if os.path.exists(path):
      self._fields = self._read()[0]

  def _read(self) -> tuple[list[str], list[dict[str, str]]]:
    with open(self.path, newline='') as f:
      content = f.read()
    lines = content.splitlines(keepends=True)
    if lines and not lines[-1].endswith('\n'):
      lines = lines[:-1]  # a row cut short by a kill
    if not lines:
      return [], []
    reader = csv.DictReader(lines)
    rows = [r for r in reader if r.get('round', '').isdigit()]
    return list(reader.fieldnames or []), rows

  def rows(self) -> list[dict[str, str]]:
    return self._read()[1] if os.path.exists(self.path) else []

  def _rewrite(self, fields: list[str], rows: list[Mapping[str, Any]]) -> None:
    tmp = self.path + '.tmp'
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=fields)
      writer.writeheader()
      for row in rows:
        writer.writerow({k: row.get(k, '') for k in fields})
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)
    self._fields = fields

  def truncate_after(self, round_num: int) -> None:
    """Keeps only rows with round <= round_num (and drops any partial last line)."""
    if not os.path.exists(self.path):
      return
    fields, rows = self._read()
    self._rewrite(fields or ['round'], [r for r in rows if int(r['round']) <= round_num])

  def write(self, round_num: int, metrics: Mapping[str, Any]) -> None:
    row = {'round': round_num, **{k: _fmt(v) for k, v in metrics.items()}}
    new_fields = [k for k in row if k not in self._fields]
    if new_fields or not os.path.exists(self.path):
      old_rows = self.rows() if os.path.exists(self.path) else []
      self._rewrite((self._fields or ['round']) + [k for k in new_fields if k != 'round'],
                    old_rows)
    with open(self.path, 'a', newline='') as f:
      csv.DictWriter(f, fieldnames=self._fields).writerow(
          {k: row.get(k, '') for k in self._fields})
      f.flush()


class TensorBoardWriter:
  """Writes every numeric metric as a scalar summary at step = round."""

  def __init__(self, logdir: str):
    self._writer = tf.summary.create_file_writer(logdir)

  def write(self, round_num: int, metrics: Mapping[str, Any]) -> None:
    with self._writer.as_default(step=round_num):
      for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          tf.summary.scalar(name, value)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
