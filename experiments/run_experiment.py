r"""Runs one federated training experiment. A thin binary over `tff_lab`.

Example (the README's main job):

  python experiments/run_experiment.py --task=digits --algorithm=fedavg --rounds=30 \
      --clients_per_round=10 --client_learning_rate=0.05 --root_output_dir=runs

Flags: `--help` lists them by section (tff_lab/training/sections.py, which they are generated
from), including the generated `--<task>_<option>` and `--client_*`/`--server_*` optimiser flags;
`--helpfull` adds absl's and TensorFlow's.
"""

from tff_lab import cli

if __name__ == '__main__':
  cli.run_experiment_app()
