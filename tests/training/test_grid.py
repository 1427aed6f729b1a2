"""Grid specs, expansion and tables (runs replaced by a stub that records configs)."""

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
