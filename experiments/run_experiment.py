r"""Runs one federated training experiment. A thin binary over `tff_lab`.

Example (the README's main job):

  python experiments/run_experiment.py --task=digits --algorithm=fedavg --rounds=30 \
      --clients_per_round=10 --client_learning_rate=0.05 --root_output_dir=runs

Flags: see `tff_lab/cli.py` (`--helpfull` lists all, including the generated
`--<task>_<option>` and `--client_*`/`--server_*` optimiser flags).
"""

from tff_lab import cli

if __name__ == '__main__':
  cli.run_experiment_app()
