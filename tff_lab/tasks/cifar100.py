"""`cifar100`: TFF's federated CIFAR-100 image classification, as TFF's baseline.

TFF's `tff.simulation.baselines.cifar100.create_image_classification_task`: CIFAR-100 split over
500 training and 100 test clients by Pachinko allocation (Reddi et al., "Adaptive Federated
Optimization", ICLR 2021, arXiv:2003.00295, App. C), TFF's preprocessing
(`image_classification_preprocessing`: training images randomly cropped to 24×24 and flipped,
test images centre-cropped, then per-image standardised) and ResNet-18 with group normalisation
(`tff_lab.models.resnet_gn`).
"""

import functools

import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.cifar100 import image_classification_preprocessing

from tff_lab.data import cache
from tff_lab.data import tff_datasets
from tff_lab.models import resnet_gn
from tff_lab.tasks import task as task_lib

NUM_CLASSES = 100


def build_cifar100_task(crop_size: int = 24, distort_train_images: bool = True,
                        data_dir: str = tff_datasets.DEFAULT_DATA_DIR, download: bool = False,
                        centralized_test_size: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    crop_size: Height and width of the crops, in [1, 32] (TFF: 24).
    distort_train_images: Random crops and flips for training images (TFF's default); centre
      crops otherwise. Test images are always centre-cropped.
    data_dir: Cache directory holding `cifar100.sqlite`.
    download: Let TFF download the file if it is missing.
    centralized_test_size: Test images in the pooled centralised test set (0: all 10,000).

  Raises:
    ValueError: For a crop size outside [1, 32].
    DatasetNotAvailableError: If the data is not cached and `download` is False.
  """
  if not 1 <= crop_size <= 32:
    raise ValueError(f'cifar100 crop_size must be in [1, 32], got {crop_size}')
  train, test = tff_datasets.load_cifar100(data_dir, download)
  crop_shape = (crop_size, crop_size, 3)

  def preprocess(distort: bool):
    return tff_datasets.per_example(image_classification_preprocessing.create_preprocess_fn(
        tff_datasets.ONE_EXAMPLE_SPEC, crop_shape=crop_shape, distort_image=distort))

  train = train.preprocess(preprocess(distort_train_images))
  # The test crop is deterministic, so it is computed once per client (tff_lab.data.cache);
  # training images are randomly distorted every round, so they are not cached.
  test = cache.CachedClientData(test.preprocess(preprocess(False)))
  return task_lib.Task(
      name='cifar100', train_data=train, test_data=test,
      centralized_test_data=tff_datasets.pooled_arrays(test, centralized_test_size),
      model_fn=functools.partial(resnet_gn.build_resnet18_gn, input_shape=crop_shape,
                                 num_classes=NUM_CLASSES),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy,
      prediction_kind='sparse_categorical',
      description=f'TFF CIFAR-100 (Pachinko, 500 clients), {crop_size}x{crop_size} crops, '
                  'ResNet-18 GN')
