"""The README's main job: FedAvg on the digits task (Dirichlet 0.5 over 20 clients, the CNN).

  tff-lab-run --config=experiments/configs/fedavg_digits.py
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.task = 'digits'
  config.algorithm = 'fedavg'
  config.rounds = 30
  config.clients_per_round = 10
  config.client_learning_rate = 0.05
  return config
