"""The `fused` backend with the aggregator stack equals the `tff` backend, end to end.

Each configuration runs through `run_experiment` on both backends (same seed, same plans; with
`secure_aggregation`, the masking protocol on either client phase); the
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

from tff_lab.algorithms import secure_rounds
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


# name: (aggregation settings, other settings: faults, client optimiser).
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
    'adaptive_clip': (dict(adaptive_clip=True, clip_norm=0.05, clip_quantile=0.5), {}),
    # The masking protocol on the fused client phase: dropouts recovered, attacks, clipping.
    # ... and a client optimiser with state (momentum), carried through the fused local steps.
    'secure': (dict(secure_aggregation=True, clip_norm=0.5),
               dict(dropout_fraction=0.17, byzantine_fraction=0.17, attack='scale',
                    client_optimizer='sgdm')),
    'secure_dp': (dict(secure_aggregation=True, dp='fixed', clip_norm=0.1,
                       noise_multiplier=1e-7), {}),
}


@pytest.mark.parametrize('name', list(CASES))
def test_fused_equals_tff(tmp_path, monkeypatch, name):
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
    if sim == 'fused' and name.startswith('secure'):
      calls = []
      phase_call = secure_rounds.FusedClientPhase.__call__
      monkeypatch.setattr(secure_rounds.FusedClientPhase, '__call__',
                          lambda self, *a: calls.append(1) or phase_call(self, *a))
    loop.run_experiment(config)
  if name.startswith('secure'):
    assert len(calls) == ROUNDS  # the protocol ran on the fused client phase
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
  # The protocol's own timings and byte counts vary from run to run (fresh keys).
  columns = {sim: [k for k in rows[sim][0] if (k.startswith('aggregator')
                                               or k.endswith('bytes_per_client'))
                   and 'secagg' not in k and 'seconds' not in k] for sim in configs}
  assert columns['fused'] == columns['tff'] and columns['tff']
  for fused_row, tff_row in zip(rows['fused'], rows['tff']):
    for key in columns['tff']:
      np.testing.assert_allclose(float(fused_row[key]), float(tff_row[key]), rtol=1e-4,
                                 atol=1e-6, err_msg=key)
