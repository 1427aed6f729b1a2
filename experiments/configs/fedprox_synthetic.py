"""FedProx on Synthetic(1, 1) as in Li et al., MLSys 2020 (Figure 1; tff_lab/baselines/fedprox.py).

E = 20 local epochs, batch 10, lr 0.01, 10 of 30 devices per round, 200 rounds, μ = 1, 50% of the
sampled devices straggling (FedProx keeps their partial work).

  tff-lab-run --config=experiments/configs/fedprox_synthetic.py --config.rounds=10
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.task = 'synthetic'
  config.synthetic_alpha = 1.0
  config.synthetic_beta = 1.0
  config.synthetic_train_fraction = 0.9  # the authors' generate_synthetic.py (App. C.2 says 0.8)
  config.algorithm = 'fedprox'
  config.mu = 1.0
  config.rounds = 200
  config.clients_per_round = 10
  config.client_epochs = 20
  config.client_batch_size = 10
  config.client_learning_rate = 0.01
  config.straggler_fraction = 0.5
  config.eval_every = 10
  return config
