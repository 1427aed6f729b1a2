"""The Task: federated data paired with a model, its loss, its metrics and its preprocessing.

Mirrors `tff.simulation.baselines.BaselineTask` (TFF's own pairing of data and model), reduced to
what tff_lab's algorithms, evaluation and training loop need, and with the per-client training
preprocessing expressed by TFF's own `tff.simulation.baselines.ClientSpec`:

    shuffle(buffer, seed) -> repeat(num_epochs) -> take(max_elements) -> batch(batch_size)

`max_elements` counts examples after the repeat, as in TFF's ClientSpec.
"""

import collections
from collections.abc import Callable
import dataclasses
from typing import Any, Mapping, Optional

import attrs
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.metrics import accuracy as accuracy_lib

ClientSpec = tff.simulation.baselines.ClientSpec
DEFAULT_SHUFFLE_BUFFER = 1000


@dataclasses.dataclass(frozen=True)
class Task:
  """A named federated learning task.

  Attributes:
    name: Registry name, e.g. `digits`.
    train_data: Per-client training data; elements are `OrderedDict(x=..., y=...)`.
    test_data: Per-client test data for federated evaluation (same element structure).
    centralized_test_data: The pooled test set `(x, y)` for centralised evaluation.
    model_fn: Returns a new, uncompiled Keras model.
    loss_fn: Returns a new Keras loss (mean over the batch).
    prediction_kind: How a prediction counts as correct; see `tff_lab.metrics.accuracy`.
    train_spec: Client-side preprocessing for training.
    eval_batch_size: Batch size for evaluation.
    example_preprocess: Optional per-example preprocessing of the raw *training* client data
      (e.g. tokenisation), applied in tf.data every time a client's dataset is built, i.e. every
      round it is sampled. Tasks normally do this once when they are built and store the result
      (`shakespeare_plays` does; `tokenize_each_round=True` selects this uncached path for
      comparison, BUILD.md "Speed of data").
    description: One line shown in logs and summaries.
    label_names: How labels read, by label id, where the ids are not the labels themselves (the
      characters of a next-character task); None: the ids (`tff-lab-data-stats` shows these).
    input_preprocessing: How raw inputs become what the model takes, for someone using the
      trained model (written beside final_model.keras as final_model.json): a `description`,
      plus any constants it names (a standardisation's `mean` and `std`); None: the features as
      the task's datasets hold them.
  """

  name: str
  train_data: tff.simulation.datasets.ClientData
  test_data: tff.simulation.datasets.ClientData
  centralized_test_data: tuple[np.ndarray, np.ndarray]
  model_fn: Callable[[], tf.keras.Model]
  loss_fn: Callable[[], tf.keras.losses.Loss]
  prediction_kind: str
  train_spec: ClientSpec = dataclasses.field(
      default_factory=lambda: ClientSpec(num_epochs=1, batch_size=20))
  eval_batch_size: int = 128
  description: str = ''
  example_preprocess: Optional[Callable[[tf.data.Dataset], tf.data.Dataset]] = None
  label_names: Optional[Mapping[int, str]] = None
  input_preprocessing: Optional[Mapping[str, Any]] = None

  def __post_init__(self):
    if self.prediction_kind not in accuracy_lib.KINDS:
      raise ValueError(f'task {self.name!r}: unknown prediction_kind {self.prediction_kind!r}')

  def with_train_spec(self, **changes) -> 'Task':
    """Returns a copy whose ClientSpec has `changes` applied (num_epochs=, batch_size=, ...)."""
    return dataclasses.replace(self, train_spec=attrs.evolve(self.train_spec, **changes))

  @property
  def element_spec(self):
    if self.example_preprocess is not None:
      return self.example_preprocess(
          self.train_data.create_tf_dataset_for_client(self.train_data.client_ids[0])).element_spec
    return self.train_data.element_type_structure

  @property
  def batch_spec(self):
    """Element spec of a batched dataset (leading dimension unknown)."""
    return collections.OrderedDict(
        (k, tf.TensorSpec([None] + list(s.shape), s.dtype)) for k, s in self.element_spec.items())

  def metrics_fn(self) -> list[tf.keras.metrics.Metric]:
    return [accuracy_lib.Accuracy(self.prediction_kind)]

  def tff_model_fn(self) -> tff.learning.models.VariableModel:
    """Wraps a fresh Keras model for `tff.learning` (call inside TFF tracing)."""
    return tff.learning.models.from_keras_model(
        self.model_fn(), loss=self.loss_fn(), input_spec=self.batch_spec,
        metrics=self.metrics_fn())

  @property
  def shuffle_buffer_size(self) -> int:
    """The training shuffle buffer `preprocess_train` uses (≤ 1: no shuffling)."""
    return self.train_spec.shuffle_buffer_size or DEFAULT_SHUFFLE_BUFFER

  def preprocess_train(self, dataset: tf.data.Dataset, seed: Optional[int] = None
                       ) -> tf.data.Dataset:
    """Applies the ClientSpec; `seed` fixes the shuffle order (a deterministic run needs one)."""
    if self.example_preprocess is not None:
      dataset = self.example_preprocess(dataset)
    spec = self.train_spec
    buffer = self.shuffle_buffer_size
    if buffer > 1:
      dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat(spec.num_epochs)
    if spec.max_elements is not None:
      dataset = dataset.take(spec.max_elements)
    return dataset.batch(spec.batch_size)

  def preprocess_eval(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.batch(self.eval_batch_size)

  def summary(self) -> dict:
    """Sizes of the task's data, for logs and summary.json (a full pass for SQL-backed data)."""
    sizes = [_num_examples(self.train_data.create_tf_dataset_for_client(c))
             for c in self.train_data.client_ids]
    return collections.OrderedDict(
        task=self.name, description=self.description,
        num_train_clients=len(self.train_data.client_ids),
        num_test_clients=len(self.test_data.client_ids),
        num_train_examples=int(np.sum(sizes)),
        num_centralized_test_examples=int(len(self.centralized_test_data[1])),
        min_client_size=int(np.min(sizes)), max_client_size=int(np.max(sizes)))


def _num_examples(dataset: tf.data.Dataset) -> int:
  n = int(dataset.cardinality())
  return n if n >= 0 else int(dataset.reduce(0, lambda count, _: count + 1))
