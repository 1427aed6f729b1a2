"""metrics.csv: one row per round, truncation on resume, torn rows, new columns; TensorBoard."""

import csv
import glob

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
