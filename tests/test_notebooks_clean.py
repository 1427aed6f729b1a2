"""Every committed notebooks/*.ipynb is valid, stored without outputs or execution counts, and
opens with the cell that installs tff_lab where it is missing (Colab)."""

import os
import pathlib
import subprocess
import sys

import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / 'notebooks').glob('*.ipynb'))


def test_there_are_notebooks():
  assert NOTEBOOKS, 'no notebooks/*.ipynb found'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stored_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == 'code'
           and (cell.get('outputs') or cell.get('execution_count') is not None)]
  assert not dirty, f'{path.name}: code cells {dirty} have outputs or execution counts; clear them'


def _install_cell(path) -> str:
  notebook = nbformat.read(path, as_version=4)
  return next(c for c in notebook.cells if c.cell_type == 'code').source


def test_every_notebook_opens_with_the_same_install_cell():
  """Colab: the first code cell installs tff_lab when it is not importable."""
  cells = {path.name: _install_cell(path) for path in NOTEBOOKS}
  first = cells[NOTEBOOKS[0].name]
  assert first.startswith('# Colab, or any kernel without tff_lab'), first[:80]
  assert all(cell == first for cell in cells.values()), [n for n, c in cells.items() if c != first]


def test_the_install_cell_does_nothing_with_tff_lab_and_explains_itself_without(tmp_path):
  code = _install_cell(NOTEBOOKS[0])
  env = {k: v for k, v in os.environ.items() if k != 'TFF_LAB_REPO'}
  # This interpreter has tff_lab: the cell does nothing (no clone, no install, no output).
  done = subprocess.run([sys.executable, '-I', '-c', code], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0 and not done.stdout and not done.stderr, done.stderr
  assert not (tmp_path / 'tff_lab_src').exists()
  # Without site-packages tff_lab is not importable: without a repository URL it says what to do.
  missing = subprocess.run([sys.executable, '-I', '-S', '-c', code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
  assert missing.returncode != 0
  assert 'TFF_LAB_REPO' in missing.stderr.splitlines()[-1], missing.stderr
