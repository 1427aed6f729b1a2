"""emnist62 / emnist10 built from a tiny `emnist_all.sqlite` in TFF's format."""

import numpy as np
import pytest

from tff_lab import tasks
from tff_lab.data import tff_datasets

_CLIENTS = {'f0000_14': 3, 'f0001_41': 2, 'f0002_07': 4}


@pytest.fixture(scope='module')
def emnist(tmp_path_factory):
  """`(data_dir, {split: {client: [(pixels, label)]}})`."""
  rng = np.random.default_rng(1)
  data_dir = tmp_path_factory.mktemp('emnist')
  written, rows = {}, []
  for split in ('all_train', 'all_test', 'digits_only_train', 'digits_only_test'):
    classes = 10 if split.startswith('digits') else 62
    written[split] = {}
    for cid, n in _CLIENTS.items():
      examples = [(rng.random((28, 28), dtype=np.float32), int(rng.integers(classes)))
                  for _ in range(n)]
      written[split][cid] = examples
      rows += [(split, cid, {'pixels': p, 'label': np.int64(l)}) for p, l in examples]
  tff_datasets.write_sql_client_data(str(data_dir / 'emnist_all.sqlite'), rows)
  return str(data_dir), written


@pytest.mark.parametrize('name, split, classes', [('emnist62', 'all', 62),
                                                   ('emnist10', 'digits_only', 10)])
def test_examples_and_default_model(emnist, name, split, classes):
  data_dir, written = emnist
  task = tasks.create_task(name, {'data_dir': data_dir})
  assert task.name == name and task.train_data.client_ids == sorted(_CLIENTS)
  for cid in _CLIENTS:
    got = list(task.train_data.create_tf_dataset_for_client(cid).as_numpy_iterator())
    expected = written[f'{split}_train'][cid]
    assert [int(e['y']) for e in got] == [label for _, label in expected]
    for e, (pixels, _) in zip(got, expected):
      np.testing.assert_array_equal(e['x'], pixels[..., None])  # 28×28×1, TFF's reshaping
  x, y = task.centralized_test_data
  assert x.shape == (sum(_CLIENTS.values()), 28, 28, 1) and sorted(y.tolist()) == sorted(
      label for examples in written[f'{split}_test'].values() for _, label in examples)

  model = task.model_fn()
  # TFF's cnn_dropout: conv3×3(32), conv3×3(64), dense 9216→128, dense 128→classes.
  assert model.count_params() == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (
      12 * 12 * 64 * 128 + 128) + (128 * classes + classes)
  batch = next(iter(task.preprocess_train(
      task.train_data.create_tf_dataset_for_client('f0002_07'), seed=0)))
  preds = model(batch['x'])
  assert preds.shape == (4, classes)
  np.testing.assert_allclose(np.sum(preds, axis=1), 1.0, rtol=1e-5)
  assert np.isfinite(float(task.loss_fn()(batch['y'], preds)))


def test_2nn_and_cnn_options(emnist):
  data_dir, _ = emnist
  two_nn = tasks.create_task('emnist62', {'data_dir': data_dir, 'model': '2nn'}).model_fn()
  assert two_nn.count_params() == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 62 + 62
  cnn = tasks.create_task('emnist10', {'data_dir': data_dir, 'model': 'cnn'}).model_fn()
  assert cnn.count_params() == 1_663_370  # McMahan et al.'s CNN on 10 classes


def test_bad_model_and_missing_data(emnist, tmp_path):
  with pytest.raises(ValueError, match="emnist model must be one of .* got 'resnet'"):
    tasks.create_task('emnist62', {'data_dir': emnist[0], 'model': 'resnet'})
  with pytest.raises(tff_datasets.DatasetNotAvailableError,
                     match=f'^EMNIST not found: expected {tmp_path}/emnist_all.sqlite '):
    tasks.create_task('emnist10', {'data_dir': str(tmp_path)})
