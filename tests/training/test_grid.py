"""Grid specs, expansion and tables (runs replaced by a stub that records configs)."""

import json

import numpy as np
import pytest

from tff_lab.training import config as config_lib
from tff_lab.training import grid


def test_parse_types_values():
  parsed = grid.parse_grid('algorithm=fedavg,fedprox; mu=0,0.5 ;rounds=3')
  assert parsed == {'algorithm': ['fedavg', 'fedprox'], 'mu': [0.0, 0.5], 'rounds': [3]}
  assert isinstance(parsed['mu'][0], float) and isinstance(parsed['rounds'][0], int)


@pytest.mark.parametrize('spec, match', [
    ('', 'empty'), ('nope=1', "'nope' is not an experiment setting"),
    ('rounds=ten', "'ten' is not a valid int"), ('rounds', 'must look like key=v1,v2'),
])
def test_bad_specs(spec, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    grid.parse_grid(spec)


def test_aggregation_settings_go_into_the_aggregation_dict(tmp_path):
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g')
  configs = grid.expand(base, grid.parse_grid('aggregator=mean,median;bits=4'))
  assert [c.aggregation for c in configs] == [{'bits': 4}, {'aggregator': 'median', 'bits': 4}]


def test_algorithm_hyperparameters_go_into_algorithm_hparams(tmp_path):
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g')
  configs = grid.expand(base, grid.parse_grid('algorithm=fedavg,fedprox; mu=0'))
  assert [(c.algorithm, c.algorithm_hparams) for c in configs] == [
      ('fedavg', {}), ('fedprox', {'mu': 0.0})]  # mu=0 is fedavg's no-op, not a setting of it
  configs = grid.expand(base, grid.parse_grid('algorithm=fedprox; mu=0.5,1'))
  assert [c.algorithm_hparams for c in configs] == [{'mu': 0.5}, {'mu': 1.0}]
  with pytest.raises(config_lib.ConfigError, match='mu only applies to --algorithm=fedprox'):
    grid.expand(base, grid.parse_grid('algorithm=fedavg; mu=0.5'))  # not dropped: not a default


def test_every_config_is_validated_before_any_run(tmp_path):
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g')
  ran = []
  with pytest.raises(config_lib.ConfigError, match='byzantine_fraction must be in'):
    grid.run_grid(base, 'byzantine_fraction=0.1,1.5', ['acc'],
                  run_fn=lambda c: ran.append(c) or {'final_metrics': {}})
  assert not ran


def test_run_grid_rows_and_table(tmp_path):
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g')
  seen = []

  def fake_run(config):
    seen.append(config)
    return {'final_metrics': {'acc': 0.5 + config.byzantine_fraction}}

  rows = grid.run_grid(base, 'algorithm=fedavg,fedprox;byzantine_fraction=0,0.2', ['acc', 'x'],
                       run_fn=fake_run)
  assert len(rows) == len(seen) == 4
  assert len({c.experiment_name for c in seen}) == 4
  assert rows[1] == {'algorithm': 'fedavg', 'byzantine_fraction': 0.2, 'acc': 0.7, 'x': None}
  table = grid.format_table(rows)
  assert table.splitlines()[0] == '| algorithm | byzantine_fraction | acc | x |'
  assert '| fedprox | 0.2 | 0.7 | None |' in table
  path = grid.write_table(rows, str(tmp_path), 'grid')
  assert open(path).read().strip() == table


def test_task_options_and_optimizer_hyperparameters_are_grid_keys(tmp_path):
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g',
                                     client_optimizer='sgdm')
  configs = grid.expand(base, grid.parse_grid('digits_model=mlp,cnn; client_sgdm_momentum=0.5'))
  assert [c.task_options for c in configs] == [{'model': 'mlp'}, {'model': 'cnn'}]
  assert [c.client_optimizer_hparams for c in configs] == [{'momentum': 0.5}] * 2
  assert len({c.experiment_name for c in configs}) == 2
  with pytest.raises(config_lib.ConfigError, match='option of task digits, but the cell has'):
    grid.expand(base, grid.parse_grid('task=synthetic; digits_model=mlp'))


def test_unknown_key_lists_the_valid_keys():
  with pytest.raises(config_lib.ConfigError) as e:
    grid.parse_grid('digits_modle=mlp,cnn')
  message = str(e.value)
  assert '\n' not in message and 'did you mean digits_model?' in message
  for key in ('digits_model', 'rounds', 'mu', 'aggregator', '{client,server}_sgdm_momentum'):
    assert key in message


def test_grid_task_option_runs_both_models(tmp_path):
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g',
                                     rounds=1, clients_per_round=2, eval_every=1, progress=False,
                                     task_options={'num_clients': 4})
  rows = grid.run_grid(base, 'digits_model=mlp,cnn', ['central_eval_accuracy'])
  assert [r['digits_model'] for r in rows] == ['mlp', 'cnn']
  summaries = []
  for model in ('mlp', 'cnn'):
    path = tmp_path / f'g__digits_model={model}' / 'config.json'
    summaries.append(json.loads(path.read_text())['task_options']['model'])
  assert summaries == ['mlp', 'cnn']
  assert all(isinstance(r['central_eval_accuracy'], float) for r in rows)


def test_seeds_report_mean_and_std(tmp_path):
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g', seed=3)
  rng = np.random.default_rng(0)
  seen = {}

  def fake_run(config):
    seen[config.experiment_name] = (config.seed, float(rng.uniform()))
    return {'final_metrics': {'acc': seen[config.experiment_name][1]}}

  rows = grid.run_grid(base, 'mu=0,0.5;algorithm=fedprox', ['acc'], run_fn=fake_run, seeds=2)
  assert len(seen) == 4 and sorted(s for s, _ in seen.values()) == [3, 3, 4, 4]
  for row, mu in zip(rows, (0.0, 0.5)):
    accs = [a for n, (_, a) in seen.items() if f'mu={mu}_' in n]
    assert len(accs) == 2 and row['seeds'] == 2
    assert row['acc'] == pytest.approx(np.mean(accs))
    assert row['acc_std'] == pytest.approx(np.std(accs))
  table = grid.format_table(rows)
  assert table.splitlines()[0] == '| mu | algorithm | seeds | acc |'
  assert f'{rows[0]["acc"]:.4f} ± {rows[0]["acc_std"]:.4f}' in table
  with pytest.raises(config_lib.ConfigError, match='use one'):
    grid.run_grid(base, 'seed=1,2', ['acc'], run_fn=fake_run, seeds=2)


def test_each_cell_progress_bar_names_its_cell(tmp_path, monkeypatch):
  from tff_lab.training import loop  # pylint: disable=g-import-not-at-top
  descs = []
  monkeypatch.setattr(loop, 'run_experiment', lambda c, progress_desc=None: descs.append(
      progress_desc) or {'final_metrics': {}})
  base = config_lib.ExperimentConfig(root_output_dir=str(tmp_path), experiment_name='g')
  grid.run_grid(base, 'rounds=2,3', ['acc'], seeds=2)
  assert descs == ['[1/4] rounds=2, seed=0', '[2/4] rounds=2, seed=1', '[3/4] rounds=3, seed=0',
                   '[4/4] rounds=3, seed=1']
