"""The quick reproductions, run once per test session and shared by the baselines tests."""

import pytest
from absl import flags
from absl.testing import flagsaver

from tff_lab import baselines
from tff_lab.baselines import cli
from tff_lab.baselines import reproduction


def run_cli(argv: list[str]) -> None:
  """`tff-lab-reproduce <argv>` in this process (flags restored afterwards)."""
  with flagsaver.flagsaver():
    remaining = flags.FLAGS(['tff-lab-reproduce'] + list(argv))
    cli.main(remaining)


@pytest.fixture(name='run_cli')
def run_cli_fixture():
  return run_cli


@pytest.fixture(scope='session')
def seed_article_quick(tmp_path_factory):
  """The seed article's quick reproduction, through the binary's main; returns its output dir."""
  out = tmp_path_factory.mktemp('seed_article_quick')
  run_cli(['seed_article', '--quick', f'--output_dir={out}', '--noprogress'])
  return out


@pytest.fixture(scope='session')
def fedprox_quick(tmp_path_factory) -> reproduction.Report:
  out = tmp_path_factory.mktemp('fedprox_quick')
  return reproduction.reproduce(baselines.get_paper('fedprox'), str(out), quick=True)
