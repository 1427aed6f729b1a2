"""The seed article's two-feature binary problem (tff_lab's founding example).

The article (shared/seed, §4.3) takes "a simple binary classification problem: two features x1 and
x2, target y ∈ {-1, +1}", fits f(x; θ) = θᵀx with L_i = ½(f(x_i; θ) - y_i)², and in §5.2 trains a
one-unit sigmoid Dense with binary cross-entropy in TFF. It leaves the data unspecified ("random
data generator"); this module fixes one, documented and seeded:

    y ~ Uniform{-1, +1}  (per-client P(y=+1) = 0.5 when iid, else spread over [0.1, 0.9])
    x = y · μ + σ · ε,   μ = (1.0, 0.5),  ε ~ N(0, I₂)

The classes are separable by a line through the origin, so the bias-free θᵀx of §4.3 suits it.
"""

import numpy as np

CLASS_MEAN = np.array([1.0, 0.5], dtype=np.float32)


def generate_seed_linear(num_clients: int = 10, examples_per_client: int = 50,
                         noise: float = 1.0, iid: bool = True, seed: int = 0
                         ) -> list[tuple[np.ndarray, np.ndarray]]:
  """Returns one `(x, y)` pair per client: x float32 [n, 2], y float32 [n, 1] in {-1, +1}.

  Args:
    num_clients: Number of clients N.
    examples_per_client: Examples on each client.
    noise: σ, the standard deviation of the Gaussian noise around ±μ.
    iid: When False, client i draws y=+1 with probability 0.1 + 0.8·i/(N-1) (label skew).
    seed: Seed of NumPy's generator.

  Raises:
    ValueError: On a non-positive count or a negative noise level.
  """
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}')
  if examples_per_client < 2:
    raise ValueError(f'examples_per_client must be >= 2, got {examples_per_client}')
  if noise < 0:
    raise ValueError(f'noise must be >= 0, got {noise}')
  rng = np.random.default_rng(seed)
  if iid or num_clients == 1:
    p_positive = np.full(num_clients, 0.5)
  else:
    p_positive = 0.1 + 0.8 * np.arange(num_clients) / (num_clients - 1)
  clients = []
  for p in p_positive:
    y = np.where(rng.random(examples_per_client) < p, 1.0, -1.0).astype(np.float32)
    x = y[:, None] * CLASS_MEAN + noise * rng.standard_normal((examples_per_client, 2))
    clients.append((x.astype(np.float32), y[:, None]))
  return clients
