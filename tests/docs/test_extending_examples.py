"""docs/extending.md's three worked examples, run as a user would: `--plugin` modules on the
binary's command line, imported from outside the package (docs/examples on PYTHONPATH, the
working directory a temporary one)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np

from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, 'docs', 'examples')


def _run(tmp_path, *argv):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [EXAMPLES] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  return subprocess.run(
      [os.path.join(os.path.dirname(sys.executable), 'tff-lab-run'),
       f'--root_output_dir={tmp_path}/runs',
       '--noprogress', '--eval_every=1', *argv],
      capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_an_aggregator_and_a_task_of_your_own(tmp_path):
  result = _run(tmp_path, '--plugin=norm_bounded_mean', '--plugin=iris_clients',
                '--task=iris_clients', '--iris_clients_num_clients=5',
                '--aggregator=norm_bounded_mean', '--norm_bounded_mean_bound=0.05',
                '--client_learning_rate=0.5', '--rounds=3', '--clients_per_round=4',
                '--experiment_name=ex')
  assert result.returncode == 0, result.stderr[-3000:]
  exp = tmp_path / 'runs' / 'ex'
  saved = json.loads((exp / 'config.json').read_text())
  assert saved['plugins'] == ['norm_bounded_mean', 'iris_clients']
  assert saved['task_options'] == {'num_clients': 5, 'alpha': 0.5, 'seed': 0}
  rows = _rows(exp / 'metrics.csv')
  assert [r['round'] for r in rows] == ['1', '2', '3']
  bounded = [k for k in rows[0] if k.endswith('bounded_clients')]
  assert bounded, sorted(rows[0])
  # With a bound this small every client's update is scaled down: the rule ran.
  assert all(int(float(r[bounded[0]])) == 4 for r in rows)
  assert all(int(r['upload_bytes_per_client']) == (4 * 3 + 3) * 4 for r in rows)
  assert float(rows[-1]['fed_eval_accuracy']) > 0


def _final_weights(tmp_path, name, algorithm, plugins=()):
  config = config_lib.ExperimentConfig(
      task='digits', task_options={'model': 'mlp', 'num_clients': 8}, algorithm=algorithm,
      rounds=3, clients_per_round=4, eval_every=1, root_output_dir=str(tmp_path / 'runs'),
      experiment_name=name, plugins=tuple(plugins))
  config.validate()  # imports the plugins, as the binary did
  task = loop.build_task(config)
  template = loop.build_process(config, task).initialize()
  state = checkpoint.load_checkpoint(str(tmp_path / 'runs' / name / 'checkpoints'), 3, template)
  return [np.asarray(w) for w in state.global_model_weights.trainable]


def test_an_algorithm_with_client_state(tmp_path, monkeypatch):
  common = ['--task=digits', '--digits_model=mlp', '--digits_num_clients=8', '--rounds=3',
            '--clients_per_round=4']
  runs = {'beta0': ['--plugin=drift_correction', '--algorithm=drift_correction',
                    '--drift_beta=0'],
          'beta1': ['--plugin=drift_correction', '--algorithm=drift_correction',
                    '--drift_beta=1', '--simulation=fused'],
          'fedavg': ['--algorithm=fedavg_unweighted']}
  for name, argv in runs.items():
    result = _run(tmp_path, *common, *argv, f'--experiment_name={name}')
    assert result.returncode == 0, (name, result.stderr[-3000:])
  rows = _rows(tmp_path / 'runs' / 'beta1' / 'metrics.csv')
  with_state = [int(float(r['client_work/drift_correction/clients_with_state'])) for r in rows]
  assert with_state[0] == 4 and with_state == sorted(with_state)  # kept across rounds
  monkeypatch.syspath_prepend(EXAMPLES)  # to read its checkpoints, as the binary did
  beta0 = _final_weights(tmp_path, 'beta0', 'drift_correction', ['drift_correction'])
  beta1 = _final_weights(tmp_path, 'beta1', 'drift_correction', ['drift_correction'])
  fedavg = _final_weights(tmp_path, 'fedavg', 'fedavg_unweighted')
  for a, b in zip(beta0, fedavg):  # β = 0 is unweighted FedAvg
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not all(np.allclose(a, b) for a, b in zip(beta1, fedavg))  # the correction acts

  bad = _run(tmp_path, *common, '--plugin=drift_correction', '--algorithm=drift_correction',
             '--drift_beta=2', '--experiment_name=bad')
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
      'error: --drift_beta must be in [0, 1], got 2.0'], bad.stderr
  assert not (tmp_path / 'runs' / 'bad').exists()
