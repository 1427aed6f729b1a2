"""FedProx's Synthetic(alpha, beta) and Synthetic-IID federated datasets.

Reference: Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated
Optimization in Heterogeneous Networks", MLSys 2020 (arXiv:1812.06127),
Section 5.1, and the authors' generators `litian96/FedProx`
`data/synthetic_*/generate_synthetic.py` and
`data/synthetic_iid/generate_iid.py`, which this module follows draw by draw
(with `np.random.default_rng(seed)` instead of the global NumPy state).

Device k holds n_k = int(lognormal(4, 2)) + 50 examples (x, y) with
x ~ N(v_k, Sigma), Sigma = diag(j^-1.2), and y = argmax(softmax(W_k x + b_k)):

* `alpha` controls how much the local models differ: W_k, b_k ~ N(u_k, 1)
  entrywise with u_k ~ N(0, alpha^2).
* `beta` controls how much the local inputs differ: v_k ~ N(B_k, 1)
  entrywise with B_k ~ N(0, beta^2).
* Synthetic-IID: v_k = 0 for every device and a single W, b ~ N(0, 1) shared
  by all devices; `alpha` and `beta` are ignored.

Note that alpha and beta are standard deviations (the authors pass them as
NumPy's `scale`), although the paper writes N(0, alpha) and N(0, beta).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SyntheticDevice:
  """One device's data.

  Attributes:
    x_train: float32 features, shape [n_train, dimension].
    y_train: int32 labels in [0, num_classes), shape [n_train].
    x_test: float32 features, shape [n_test, dimension].
    y_test: int32 labels in [0, num_classes), shape [n_test].
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def covariance_diagonal(dimension: int) -> np.ndarray:
  """Returns the diagonal of Sigma: Sigma_jj = j^-1.2 for j = 1..dimension."""
  if dimension < 1:
    raise ValueError(f'dimension must be >= 1, got {dimension}')
  return np.arange(1, dimension + 1, dtype=np.float64)**-1.2


def generate_synthetic(alpha: float = 1.0,
                       beta: float = 1.0,
                       iid: bool = False,
                       num_devices: int = 30,
                       train_fraction: float = 0.8,
                       seed: int = 0,
                       dimension: int = 60,
                       num_classes: int = 10) -> list[SyntheticDevice]:
  """Generates FedProx's Synthetic(alpha, beta) or Synthetic-IID data.

  The random draws happen in the authors' order: device sizes, then the
  priors u_k and B_k (non-IID only), the input means v_k, then per device
  (W_k, b_k) and its examples (IID: the shared W, b, then the examples), and
  finally one shuffle per device before the train/test split.

  Two deliberate, distribution-preserving deviations from the authors' code:
  x is sampled as `v_k + sqrt(diag(Sigma)) * N(0, I)` rather than with
  `multivariate_normal` (same law, Sigma is diagonal), and y is the argmax of
  the logits, which equals the argmax of their softmax but cannot overflow.

  Args:
    alpha: Standard deviation of the model prior u_k, >= 0.
    beta: Standard deviation of the input prior B_k, >= 0.
    iid: If True, generate Synthetic-IID (alpha and beta are ignored).
    num_devices: Number of devices (the paper uses 30).
    train_fraction: Fraction of each device's examples, after a shuffle, used
      for training: train = first `int(train_fraction * n_k)`. The paper
      reports an 80/20 split (the default); the authors' scripts use 0.9.
    seed: Seed for `np.random.default_rng`.
    dimension: Feature dimension (the paper uses 60).
    num_classes: Number of classes (the paper uses 10).

  Returns:
    One `SyntheticDevice` per device.

  Raises:
    ValueError: On an invalid argument, or if `train_fraction` leaves some
      device with an empty train or test split.
  """
  if alpha < 0:
    raise ValueError(f'alpha must be >= 0, got {alpha}')
  if beta < 0:
    raise ValueError(f'beta must be >= 0, got {beta}')
  if num_devices < 1:
    raise ValueError(f'num_devices must be >= 1, got {num_devices}')
  if not 0 < train_fraction < 1:
    raise ValueError(
        f'train_fraction must be in (0, 1), got {train_fraction}')
  if num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes}')
  std_x = np.sqrt(covariance_diagonal(dimension))

  rng = np.random.default_rng(seed)
  samples_per_device = rng.lognormal(4, 2, num_devices).astype(int) + 50
  train_sizes = (train_fraction * samples_per_device).astype(int)
  for n, n_train in zip(samples_per_device, train_sizes):
    if n_train < 1 or n - n_train < 1:
      raise ValueError(
          f'train_fraction={train_fraction} leaves a device of {n} examples '
          f'with {n_train} train and {n - n_train} test examples; both must '
          'be >= 1')

  if iid:
    mean_x = np.zeros((num_devices, dimension))
    shared_w = rng.normal(0, 1, (dimension, num_classes))
    shared_b = rng.normal(0, 1, num_classes)
  else:
    mean_w = rng.normal(0, alpha, num_devices)  # u_k
    mean_b = mean_w
    prior_x = rng.normal(0, beta, num_devices)  # B_k
    mean_x = np.stack(
        [rng.normal(prior_x[i], 1, dimension) for i in range(num_devices)])

  features, labels = [], []
  for i in range(num_devices):
    if iid:
      w, b = shared_w, shared_b
    else:
      w = rng.normal(mean_w[i], 1, (dimension, num_classes))
      b = rng.normal(mean_b[i], 1, num_classes)
    n = samples_per_device[i]
    x = mean_x[i] + std_x * rng.standard_normal((n, dimension))
    features.append(x)
    labels.append(np.argmax(x @ w + b, axis=1))

  devices = []
  for x, y, n_train in zip(features, labels, train_sizes):
    order = rng.permutation(len(y))
    x = x[order].astype(np.float32)
    y = y[order].astype(np.int32)
    devices.append(
        SyntheticDevice(
            x_train=x[:n_train],
            y_train=y[:n_train],
            x_test=x[n_train:],
            y_test=y[n_train:]))
  return devices
