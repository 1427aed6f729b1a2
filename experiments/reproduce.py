r"""Reproduces a paper: its grid of runs, its claims, report.md and figures. A thin binary.

Example:

  python experiments/reproduce.py seed_article --output_dir=reproductions/seed_article
  python experiments/reproduce.py fedprox --quick

Flags and exit codes: see `tff_lab/baselines/cli.py`; papers: `tff_lab/baselines/`.
"""

from tff_lab.baselines import cli

if __name__ == '__main__':
  cli.run_app()
