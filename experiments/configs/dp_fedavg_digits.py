"""DP-FedAvg (McMahan et al., ICLR 2018) on digits: clipped updates, Gaussian noise z = 1, and ε
reported every round (tff_lab/aggregators/dp.py, tff_lab/privacy/).

  tff-lab-run --config=experiments/configs/dp_fedavg_digits.py --config.noise_multiplier=0.5
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.task = 'digits'
  config.algorithm = 'fedavg'
  config.rounds = 30
  config.clients_per_round = 10
  config.client_learning_rate = 0.05
  config.dp = 'fixed'
  config.clip_norm = 1.0
  config.noise_multiplier = 1.0
  return config
