"""A tff-lab-tune study: FedAdam's server and client learning rates on digits (Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021, §4.3's pattern: both rates over a log10 range).

  tff-lab-tune --config=experiments/configs/tune_fedadam_digits.py --n_trials=20 --pruner=median
  tff-lab-tune --config=experiments/configs/tune_fedadam_digits.py:grid --sampler=grid --n_trials=42

The first searches both rates log-uniformly over [10^-3, 10^0.5] with TPE. `:grid` is the paper's
way instead: a log10 grid in half decades (server 10^-3 ... 10^0, client 10^-2 ... 10^0.5; 42
points), each point once (`--sampler=grid`). Trials are tff-lab-run experiments on the base,
FedAvg on digits (fedavg_digits.py beside this file) with a server Adam and ε = τ = 10^-3, the
paper's recommended default. The best trial's settings are written as a tff-lab-run config file,
runs/tune_fedadam_digits/best_config.py (runs/tune_fedadam_digits_grid/ for `:grid`).
tff_lab/tuning/study.py documents every field.
"""

import os

import ml_collections


def _log10_grid(low: float, high: float) -> list[float]:
  """10^low, 10^(low + 0.5), ..., 10^high: the paper's half-decade grid."""
  return [float(10**(low + k / 2)) for k in range(int(round(2 * (high - low))) + 1)]


def get_config(arg: str = ''):
  if arg not in ('', 'grid'):
    raise ValueError(f"tune_fedadam_digits.py takes no argument or ':grid', got {arg!r}")
  config = ml_collections.ConfigDict()
  # The README's FedAvg on digits.
  config.base_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fedavg_digits.py')
  config.base = ml_collections.ConfigDict(dict(
      server_optimizer='adam',
      server_adam_epsilon=1e-3,  # Reddi et al.'s τ
      rounds=20,
      eval_every=5,
      progress=False,
  ))
  if arg == 'grid':
    config.space = ml_collections.ConfigDict(dict(
        server_learning_rate=dict(type='categorical', choices=_log10_grid(-3, 0)),
        client_learning_rate=dict(type='categorical', choices=_log10_grid(-2, 0.5)),
    ))
  else:
    config.space = ml_collections.ConfigDict(dict(
        server_learning_rate=dict(type='log_uniform', low=10**-3, high=10**0.5),
        client_learning_rate=dict(type='log_uniform', low=10**-3, high=10**0.5),
    ))
  config.metric = 'central_eval_accuracy'
  config.direction = 'maximize'
  return config
