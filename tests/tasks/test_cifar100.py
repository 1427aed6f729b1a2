"""cifar100 built from a tiny `cifar100.sqlite` in TFF's format."""

import numpy as np
import pytest

from tff_lab import tasks
from tff_lab.data import tff_datasets


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
  """`(data_dir, {split: {client: [(image, label)]}})`; 2 train clients, 1 test client."""
  rng = np.random.default_rng(2)
  path = tmp_path_factory.mktemp('cifar100')
  written = {'train': {'0': [], '1': []}, 'test': {'0': []}}
  rows = []
  for split, clients in written.items():
    for cid, examples in clients.items():
      for _ in range(3):
        image, label = rng.integers(0, 256, (32, 32, 3)), int(rng.integers(100))
        examples.append((image, label))
        rows.append((split, cid, {'image': image, 'label': np.int64(label),
                                  'coarse_label': np.int64(label // 5)}))
  tff_datasets.write_sql_client_data(str(path / 'cifar100.sqlite'), rows)
  return str(path), written


def standardized_centre_crop(image: np.ndarray, size: int = 24) -> np.ndarray:
  """tf.image.resize_with_crop_or_pad + per_image_standardization, in NumPy."""
  top = (32 - size) // 2
  crop = image[top:top + size, top:top + size].astype(np.float64)
  return (crop - crop.mean()) / max(crop.std(), 1.0 / np.sqrt(crop.size))


def test_preprocessing_and_one_forward_pass(cifar):
  data_dir, written = cifar
  task = tasks.create_task('cifar100', {'data_dir': data_dir})
  assert task.train_data.client_ids == ['0', '1'] and task.test_data.client_ids == ['0']
  x, y = task.centralized_test_data
  assert y.tolist() == [label for _, label in written['test']['0']]
  for got, (image, _) in zip(x, written['test']['0']):
    np.testing.assert_allclose(got, standardized_centre_crop(image), atol=1e-4)
  # Training images are random 24×24 crops and flips of the originals, standardised.
  train = list(task.train_data.create_tf_dataset_for_client('1').as_numpy_iterator())
  assert [int(e['y']) for e in train] == [label for _, label in written['train']['1']]
  for e in train:
    assert e['x'].shape == (24, 24, 3)
    assert abs(e['x'].mean()) < 1e-4 and abs(e['x'].std() - 1.0) < 1e-3

  probs = task.model_fn()(x[:2])
  assert probs.shape == (2, 100)
  np.testing.assert_allclose(np.sum(probs, axis=1), 1.0, rtol=1e-5)
  assert np.isfinite(float(task.loss_fn()(y[:2], probs)))


def test_options_are_checked(tmp_path):
  with pytest.raises(ValueError, match='cifar100 crop_size must be in \\[1, 32\\], got 40'):
    tasks.create_task('cifar100', {'crop_size': 40, 'data_dir': str(tmp_path)})
  with pytest.raises(tff_datasets.DatasetNotAvailableError,
                     match=f'^CIFAR-100 not found: expected {tmp_path}/cifar100.sqlite '):
    tasks.create_task('cifar100', {'data_dir': str(tmp_path)})
