"""Every run of every reproduced paper (tff_lab/baselines/), as a tff-lab-run config file.

The argument after the colon names the paper and the run, as `tff-lab-reproduce` names its
experiment directories (`<output_dir>/runs/<run>`); `quick/` selects the `--quick` grid:

  tff-lab-run --config=experiments/configs/reproductions.py:fedprox/<run>
  tff-lab-run --config=experiments/configs/reproductions.py:seed_article/quick/<run>

An unknown paper or run is refused with the list of names.
"""

import dataclasses

from tff_lab import baselines
from tff_lab.flags import config_file


def get_config(arg: str = ''):
  paper_name, _, run_name = arg.partition('/')
  paper = baselines.get_paper(paper_name)  # one line listing the papers, for an unknown one
  quick = run_name.startswith('quick/')
  run_name = run_name[len('quick/'):] if quick else run_name
  seeds = paper.quick_seeds if quick else paper.default_seeds
  runs = {run.name: run for run in paper.runs(quick, seeds)}
  if run_name not in runs:
    raise ValueError(f'paper {paper_name!r} has no {"quick " if quick else ""}run '
                     f'{run_name!r}; its runs: {", ".join(runs)}')
  return config_file.config_dict(dataclasses.replace(runs[run_name].config,
                                                    experiment_name=run_name))
