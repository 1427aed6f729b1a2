"""The `fused` backend with the aggregator stack equals the `tff` backend, end to end.

Each configuration runs through `run_experiment` on both backends (same seed, same plans); the
final weights and every `aggregator/...` column of metrics.csv must agree to float32 round-off.
Only deterministic settings here: a random codec seeds each client from a hash of its own update,
and the two backends' updates differ by round-off, so `tests/aggregators/test_in_graph.py`
checks those from identical client values instead. DP's noise is unseeded on both paths; here
it is made negligible (z = 1e-7) to compare everything else, and both runs get the same
sampling secret.
"""

import csv
import shutil

import numpy as np
import pytest

from tff_lab.privacy import secret as secret_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop

ROUNDS = 2


def _config(tmp_path, name, simulation, aggregation, **kwargs):
  return config_lib.ExperimentConfig(
      task='seed_linear', rounds=ROUNDS, clients_per_round=6, eval_every=0, checkpoint_every=1,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False,
      simulation=simulation, aggregation=dict(aggregation), **kwargs)


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


CASES = {
    'clip': (dict(clip_norm=0.05), {}),
    'median_sign_flip': (dict(aggregator='median'),
                         dict(byzantine_fraction=0.34, attack='sign_flip', attack_scale=4.0)),
    'trimmed_mean_gaussian': (dict(aggregator='trimmed_mean', trim_fraction=0.2, clip_norm=0.5),
                              dict(byzantine_fraction=0.34, attack='gaussian')),
    'krum_scale': (dict(aggregator='krum', krum_f=1, multi_krum_m=2),
                   dict(byzantine_fraction=0.17, attack='scale', attack_scale=10.0)),
    'geometric_median': (dict(aggregator='geometric_median', gm_passes=3), {}),
    'topk': (dict(compression='topk', topk_fraction=0.5), {}),
    'dp_fixed': (dict(dp='fixed', clip_norm=0.1, noise_multiplier=1e-7), {}),
}


@pytest.mark.parametrize('name', list(CASES))
def test_fused_equals_tff(tmp_path, name):
  aggregation, faults = CASES[name]
  algorithm = {'algorithm': 'fedavg_unweighted'} if 'dp' in aggregation else {}
  configs = {sim: _config(tmp_path, f'{name}_{sim}', sim, aggregation,
                          **faults, **algorithm)
             for sim in ('tff', 'fused')}
  for sim, config in configs.items():
    config.validate()
    if sim == 'fused' and 'dp' in aggregation:
      # Under DP clients are sampled from a per-run secret; give both runs the same one.
      secret = tmp_path / f'{name}_tff' / 'checkpoints' / secret_lib.SECRET_FILENAME
      (tmp_path / f'{name}_fused' / 'checkpoints').mkdir(parents=True)
      shutil.copy2(secret, tmp_path / f'{name}_fused' / 'checkpoints')
    loop.run_experiment(config)
  task = loop.build_task(configs['tff'])
  template = loop.build_process(configs['tff'], task).initialize()
  states = {sim: checkpoint.load_checkpoint(str(tmp_path / f'{name}_{sim}' / 'checkpoints'),
                                            ROUNDS, template) for sim in configs}
  initial = template.global_model_weights.trainable
  for a, b, w0 in zip(states['fused'].global_model_weights.trainable,
                      states['tff'].global_model_weights.trainable, initial):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not np.allclose(a, w0)  # the rounds moved the model
  rows = {sim: _rows(tmp_path / f'{name}_{sim}' / 'metrics.csv') for sim in configs}
  columns = {sim: [k for k in rows[sim][0] if k.startswith('aggregator')
                   or k.endswith('bytes_per_client')] for sim in configs}
  assert columns['fused'] == columns['tff'] and columns['tff']
  for fused_row, tff_row in zip(rows['fused'], rows['tff']):
    for key in columns['tff']:
      np.testing.assert_allclose(float(fused_row[key]), float(tff_row[key]), rtol=1e-4,
                                 atol=1e-6, err_msg=key)
