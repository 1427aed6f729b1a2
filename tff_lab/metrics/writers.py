"""Where round metrics go: metrics.csv (one row per round), metrics.jsonl and TensorBoard.

The CSV is the record a researcher loads into pandas. It is append-only during a run (flushed
every row), and `truncate_after(round)` rewrites it atomically on resume so that rows written
after the last checkpoint (or half-written by a kill) are dropped before those rounds are re-run:
a resumed run ends with exactly one row per round. A metric that first appears in a later round
(e.g. evaluation columns) extends the header by rewriting the file.

With `jsonl_path`, each CSV row is also streamed as one JSON object per line (metrics.jsonl, for
`tail -f | jq` and readers that should not re-parse a growing CSV): `round` and the row's
non-empty cells, each value read back from its CSV text (int, float, bool or string), so the two
files hold the same rows. It is appended and flushed right after the CSV row, and
`truncate_after` rebuilds it from the CSV rows it keeps, so after a resume neither file has a
lost or a duplicated round. A non-finite float (CSV `inf`; NaN is an empty cell) is written as
its CSV text, a string: JSON has no such numbers.

TensorBoard's event files are truncated the same way on resume (`TensorBoardWriter(resume_at=)`,
`truncate_event_files`), so each round keeps exactly one value per tag.
"""

import csv
import json
import math
import os
from collections.abc import Mapping
from typing import Any, Optional

import tensorflow as tf


def _fmt(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ''
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _parse(text: str) -> Any:
  """A CSV cell as the value it was written from (`_fmt`'s inverse for ints, floats and bools)."""
  for kind in (int, float):
    try:
      value = kind(text)
    except ValueError:
      continue
    return value if math.isfinite(value) else text
  return {'True': True, 'False': False}.get(text, text)


def json_row(row: Mapping[str, str]) -> 'dict[str, Any]':
  """The metrics.jsonl object of one metrics.csv row (a `csv.DictReader` row): `round` and the
  non-empty cells, parsed."""
  return {k: _parse(v) for k, v in row.items() if k is not None and isinstance(v, str) and v}


class CSVMetricsWriter:
  """Appends one row per round to a CSV file whose first column is `round`.

  Args:
    path: The CSV file.
    jsonl_path: If given, the same rows are streamed to this JSON Lines file (`json_row`) and
      truncated with the CSV.
  """

  def __init__(self, path: str, jsonl_path: Optional[str] = None):
    self.path = path
    self.jsonl_path = jsonl_path
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

  def _rewrite_jsonl(self, rows: list[Mapping[str, str]]) -> None:
    tmp = self.jsonl_path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      for row in rows:
        f.write(json.dumps(json_row(row)) + '\n')
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.jsonl_path)

  def truncate_after(self, round_num: int) -> None:
    """Keeps only rows with round <= round_num (and drops any partial last line); metrics.jsonl
    is rebuilt from the kept rows (emptied when there is no CSV yet)."""
    if not os.path.exists(self.path):
      if self.jsonl_path and os.path.exists(self.jsonl_path):
        self._rewrite_jsonl([])
      return
    fields, rows = self._read()
    kept = [r for r in rows if int(r['round']) <= round_num]
    self._rewrite(fields or ['round'], kept)
    if self.jsonl_path:
      self._rewrite_jsonl([{k: r.get(k, '') for k in self._fields} for r in kept])

  def write(self, round_num: int, metrics: Mapping[str, Any]) -> None:
    row = {'round': round_num, **{k: _fmt(v) for k, v in metrics.items()}}
    new_fields = [k for k in row if k not in self._fields]
    if new_fields or not os.path.exists(self.path):
      old_rows = self.rows() if os.path.exists(self.path) else []
      self._rewrite((self._fields or ['round']) + [k for k in new_fields if k != 'round'],
                    old_rows)
    cells = {k: row.get(k, '') for k in self._fields}
    with open(self.path, 'a', newline='') as f:
      csv.DictWriter(f, fieldnames=self._fields).writerow(cells)
      f.flush()
    if self.jsonl_path:
      with open(self.jsonl_path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(json_row({k: str(v) for k, v in cells.items()})) + '\n')
        f.flush()


def _event_files(logdir: str) -> list[str]:
  """The event files TensorBoard reads in `logdir`, oldest first (their names start with time)."""
  if not os.path.isdir(logdir):
    return []
  return [os.path.join(logdir, name) for name in sorted(os.listdir(logdir))
          if 'tfevents' in name and os.path.isfile(os.path.join(logdir, name))]


def _read_events(path: str) -> list[tf.compat.v1.Event]:
  """The events of one file, up to a record cut short (a kill mid-write) or damaged."""
  events = []
  try:
    for record in tf.data.TFRecordDataset(path):
      events.append(tf.compat.v1.Event.FromString(record.numpy()))
  except tf.errors.DataLossError:
    pass
  return events


def truncate_event_files(logdir: str, round_num: int) -> int:
  """Rewrites `logdir`'s event files to keep only steps <= round_num, one value per (tag, step).

  The kept events (with their wall times) go into one file that takes the oldest file's name; the
  other files are then deleted. Each step is atomic (temp file, fsync, rename), and a repeated
  (tag, step) keeps its last value, so a kill at any point leaves files that the next call turns
  into the same result.

  Returns:
    The number of summary values dropped (0: the files were left untouched).
  """
  paths = _event_files(logdir)
  if not paths:
    return 0
  events = [e for path in paths for e in _read_events(path)]
  last = {}
  for i, event in enumerate(events):
    for j, value in enumerate(event.summary.value):
      last[(value.tag, event.step)] = (i, j)
  kept, dropped, has_version = [], 0, False
  for i, event in enumerate(events):
    if event.HasField('file_version'):
      if not has_version:
        kept.append(event)
        has_version = True
      continue
    if event.step > round_num:
      dropped += len(event.summary.value)
      continue
    if event.HasField('summary'):
      values = [v for j, v in enumerate(event.summary.value)
                if last[(v.tag, event.step)] == (i, j)]
      dropped += len(event.summary.value) - len(values)
      if not values:
        continue
      if len(values) < len(event.summary.value):
        event = tf.compat.v1.Event(wall_time=event.wall_time, step=event.step,
                                   summary=tf.compat.v1.Summary(value=values))
    kept.append(event)
  if not dropped and len(paths) == 1:
    return 0
  tmp = os.path.join(logdir, '.truncate.tmp')  # no 'tfevents' in the name: TensorBoard skips it
  with tf.io.TFRecordWriter(tmp) as writer:
    for event in kept:
      writer.write(event.SerializeToString())
  with open(tmp, 'rb') as f:
    os.fsync(f.fileno())
  os.replace(tmp, paths[0])
  for path in paths[1:]:
    os.remove(path)
  return dropped


class TensorBoardWriter:
  """Writes every numeric metric as a scalar summary at step = round.

  Args:
    logdir: The event files' directory.
    resume_at: If given, a run resumes after this round: existing event files first drop every
      step after it (see `truncate_after`), as metrics.csv does.
  """

  def __init__(self, logdir: str, resume_at: Optional[int] = None):
    self.logdir = logdir
    if resume_at is not None:
      truncate_event_files(logdir, resume_at)
    self._writer = tf.summary.create_file_writer(logdir)

  def truncate_after(self, round_num: int) -> int:
    """Keeps only steps <= round_num in the event files (one value per tag and step).

    Returns:
      The number of values dropped.
    """
    self._writer.close()
    dropped = truncate_event_files(self.logdir, round_num)
    self._writer = tf.summary.create_file_writer(self.logdir)
    return dropped

  def write(self, round_num: int, metrics: Mapping[str, Any]) -> None:
    with self._writer.as_default(step=round_num):
      for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          tf.summary.scalar(name, value)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
