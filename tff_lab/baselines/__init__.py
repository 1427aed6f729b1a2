"""Reproduced papers: one module per paper, each a `reproduction.Paper` (issue #12).

`get_paper(name)` returns a paper's description; `tff_lab.baselines.reproduction.reproduce` runs
it, and `tff-lab-reproduce <paper>` (`tff_lab/baselines/cli.py`) is the binary.
"""

import importlib

# Paper name -> module under tff_lab.baselines (imported on first use).
PAPERS = {
    'seed_article': 'seed_article',
    'fedprox': 'fedprox',
    'mcmahan2017': 'mcmahan2017',
}


def paper_names() -> list[str]:
  return list(PAPERS)


def get_paper(name: str):
  """The `reproduction.Paper` named `name`.

  Raises:
    ValueError: For an unknown name (one line listing the known papers).
  """
  if name not in PAPERS:
    raise ValueError(f'unknown paper {name!r}; known papers: {", ".join(PAPERS)}')
  return importlib.import_module(f'tff_lab.baselines.{PAPERS[name]}').PAPER
