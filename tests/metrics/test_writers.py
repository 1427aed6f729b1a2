"""metrics.csv: one row per round, truncation on resume, torn rows, new columns; metrics.jsonl:
the same rows, truncated with it; TensorBoard and its truncation on resume (one value per tag and
step)."""

import csv
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tff_lab.metrics import writers


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_append_and_extend_header(tmp_path):
  path = tmp_path / 'metrics.csv'
  w = writers.CSVMetricsWriter(str(path))
  w.write(1, {'train_loss': 0.5})
  w.write(2, {'train_loss': 0.4, 'eval_accuracy': 0.9})
  rows = _rows(path)
  assert [r['round'] for r in rows] == ['1', '2']
  assert rows[0]['eval_accuracy'] == '' and rows[1]['eval_accuracy'] == '0.9'
  assert list(rows[0])[0] == 'round'


def test_truncate_after_drops_later_and_torn_rows(tmp_path):
  path = tmp_path / 'metrics.csv'
  w = writers.CSVMetricsWriter(str(path))
  for r in range(1, 6):
    w.write(r, {'train_loss': 1.0 / r})
  with open(path, 'a') as f:
    f.write('6,0.16')  # a row cut short by SIGKILL (no newline)
  reopened = writers.CSVMetricsWriter(str(path))
  reopened.truncate_after(3)
  assert [r['round'] for r in _rows(path)] == ['1', '2', '3']
  reopened.write(4, {'train_loss': 0.25})
  assert [r['round'] for r in _rows(path)] == ['1', '2', '3', '4']


def test_tensorboard_scalars(tmp_path):
  w = writers.TensorBoardWriter(str(tmp_path))
  w.write(3, {'train_loss': 0.5, 'note': 'text is skipped'})
  w.close()
  events = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  assert events
  tags = {(v.tag, e.step) for path in events for e in tf.compat.v1.train.summary_iterator(path)
          for v in e.summary.value}
  assert ('train_loss', 3) in tags and not any(t == 'note' for t, _ in tags)


def _values(logdir):
  """(tag, step) -> the list of values the event files hold for it, in file order."""
  out = {}
  for path in sorted(glob.glob(os.path.join(str(logdir), '*tfevents*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        out.setdefault((v.tag, event.step), []).append(float(tf.make_ndarray(v.tensor)))
  return out


def _write_rounds(logdir, rounds, offset=0.0):
  w = writers.TensorBoardWriter(str(logdir))
  for r in rounds:
    w.write(r, {'train_loss': 1.0 / r + offset, 'eval_accuracy': 0.1 * r + offset})
  w.close()


def test_tensorboard_truncate_after_keeps_one_value_per_step(tmp_path):
  _write_rounds(tmp_path, range(1, 6))        # a first attempt, killed after round 5 ...
  _write_rounds(tmp_path, range(4, 8), 100.0)  # ... resumed at 3 without truncation (the old bug)
  assert _values(tmp_path)[('train_loss', 4)] == pytest.approx([0.25, 100.25])
  w = writers.TensorBoardWriter(str(tmp_path))
  assert w.truncate_after(5) > 0
  w.write(6, {'train_loss': 6.0})
  w.close()
  values = _values(tmp_path)
  assert sorted(values) == sorted([(t, s) for t in ('train_loss', 'eval_accuracy')
                                   for s in range(1, 6)] + [('train_loss', 6)])
  assert all(len(v) == 1 for v in values.values()), values
  # A repeated step keeps its last value; earlier steps are bit-identical to what was written.
  assert values[('train_loss', 4)] == pytest.approx([100.25])
  assert values[('train_loss', 2)] == [float(np.float32(0.5))]
  assert values[('train_loss', 6)] == [6.0]
  assert len(glob.glob(str(tmp_path / '*tfevents*'))) == 2  # the rewritten file and the new one
  assert not [n for n in os.listdir(tmp_path) if 'tmp' in n]


def test_tensorboard_resume_at_drops_later_steps_and_torn_records(tmp_path):
  _write_rounds(tmp_path, range(1, 5))
  (path,) = glob.glob(str(tmp_path / '*tfevents*'))
  with open(path, 'ab') as f:
    f.write(b'\x17\x00\x00\x00\x00\x00\x00\x00torn')  # a record cut short by SIGKILL
  before = {k: v for k, v in _values_until_torn(path).items() if k[1] <= 2}
  w = writers.TensorBoardWriter(str(tmp_path), resume_at=2)
  w.close()
  values = _values(tmp_path)
  assert values == before and {s for _, s in values} == {1, 2}
  # Once merged into one file with nothing to drop, the file is left as it is.
  assert writers.truncate_event_files(str(tmp_path), 2) == 0
  (path,) = glob.glob(str(tmp_path / '*tfevents*'))
  stat = os.stat(path)
  assert writers.truncate_event_files(str(tmp_path), 2) == 0
  assert os.stat(path).st_mtime_ns == stat.st_mtime_ns and os.stat(path).st_ino == stat.st_ino
  assert _values(tmp_path) == before
  assert writers.truncate_event_files(str(tmp_path / 'missing'), 2) == 0


def _values_until_torn(path):
  out = {}
  try:
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        out.setdefault((v.tag, event.step), []).append(float(tf.make_ndarray(v.tensor)))
  except tf.errors.DataLossError:
    pass
  return out


def test_tensorboard_truncation_is_idempotent_after_a_kill_mid_rewrite(tmp_path, monkeypatch):
  _write_rounds(tmp_path, range(1, 5))
  _write_rounds(tmp_path, range(3, 6), 10.0)
  # Killed after the rewritten file replaced the oldest one, before the others were deleted.
  real_remove = os.remove

  def killed(path):
    raise KeyboardInterrupt

  monkeypatch.setattr(os, 'remove', killed)
  with pytest.raises(KeyboardInterrupt):
    writers.truncate_event_files(str(tmp_path), 4)
  monkeypatch.setattr(os, 'remove', real_remove)
  writers.truncate_event_files(str(tmp_path), 4)
  values = _values(tmp_path)
  assert {s for _, s in values} == {1, 2, 3, 4}
  assert all(len(v) == 1 for v in values.values()), values
  assert values[('train_loss', 3)] == pytest.approx([10.0 + 1 / 3])
  assert values[('train_loss', 1)] == [1.0]


def _jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _as_csv_cells(obj):
  """A metrics.jsonl object as the non-empty cells of its metrics.csv row."""
  return {k: writers._fmt(v) if not isinstance(v, str) else v  # pylint: disable=protected-access
          for k, v in obj.items()}


def _assert_same_rows(csv_path, jsonl_path):
  rows = _rows(csv_path)
  objects = _jsonl(jsonl_path)
  assert [o['round'] for o in objects] == [int(r['round']) for r in rows]
  for row, obj in zip(rows, objects):
    assert _as_csv_cells(obj) == {k: v for k, v in row.items() if v != ''}


def test_jsonl_streams_the_csv_rows_with_their_types(tmp_path):
  csv_path, jsonl_path = tmp_path / 'metrics.csv', tmp_path / 'metrics.jsonl'
  w = writers.CSVMetricsWriter(str(csv_path), str(jsonl_path))
  w.write(1, {'train_loss': 0.1 + 0.2, 'train_examples': np.int64(12).item(), 'note': 'a,b',
              'missing': float('nan'), 'eps': float('inf'), 'flag': True})
  assert len(_jsonl(jsonl_path)) == 1  # written with the round, not at the end
  w.write(2, {'train_loss': 0.25, 'fed_eval_accuracy': 0.5})  # a new column: the CSV is rewritten
  objects = _jsonl(jsonl_path)
  assert objects[0] == {'round': 1, 'train_loss': 0.1 + 0.2, 'train_examples': 12, 'note': 'a,b',
                        'eps': 'inf', 'flag': True}  # NaN is an empty cell: absent
  assert type(objects[0]['train_examples']) is int
  assert objects[1] == {'round': 2, 'train_loss': 0.25, 'fed_eval_accuracy': 0.5}
  _assert_same_rows(csv_path, jsonl_path)


def test_jsonl_is_truncated_with_the_csv(tmp_path):
  csv_path, jsonl_path = tmp_path / 'metrics.csv', tmp_path / 'metrics.jsonl'
  w = writers.CSVMetricsWriter(str(csv_path), str(jsonl_path))
  for r in range(1, 6):
    w.write(r, {'train_loss': 1.0 / r})
  with open(csv_path, 'a') as f:
    f.write('6,0.16')  # a CSV row cut short by SIGKILL ...
  with open(jsonl_path, 'a') as f:
    f.write('{"round": 6, "train_lo')  # ... and its JSON line
  reopened = writers.CSVMetricsWriter(str(csv_path), str(jsonl_path))
  reopened.truncate_after(3)
  assert [o['round'] for o in _jsonl(jsonl_path)] == [1, 2, 3]
  reopened.write(4, {'train_loss': 0.25})
  _assert_same_rows(csv_path, jsonl_path)
  assert [o['round'] for o in _jsonl(jsonl_path)] == [1, 2, 3, 4]


def test_jsonl_missing_round_is_rebuilt_from_the_csv(tmp_path):
  # Killed between the CSV row and its JSON line, or a run made before metrics.jsonl existed:
  # truncation rebuilds the JSON lines from the CSV rows it keeps.
  csv_path, jsonl_path = tmp_path / 'metrics.csv', tmp_path / 'metrics.jsonl'
  w = writers.CSVMetricsWriter(str(csv_path))
  for r in range(1, 4):
    w.write(r, {'train_loss': 1.0 / r, 'aggregator/num_clients': 5})
  writers.CSVMetricsWriter(str(csv_path), str(jsonl_path)).truncate_after(2)
  assert _jsonl(jsonl_path) == [{'round': 1, 'train_loss': 1.0, 'aggregator/num_clients': 5},
                                {'round': 2, 'train_loss': 0.5, 'aggregator/num_clients': 5}]
  _assert_same_rows(csv_path, jsonl_path)


def test_jsonl_without_csv_is_emptied_on_a_fresh_start(tmp_path):
  jsonl_path = tmp_path / 'metrics.jsonl'
  jsonl_path.write_text('{"round": 1}\n')
  writers.CSVMetricsWriter(str(tmp_path / 'metrics.csv'), str(jsonl_path)).truncate_after(0)
  assert jsonl_path.read_text() == ''
