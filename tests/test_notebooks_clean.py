"""Every committed notebooks/*.ipynb is valid and stored without outputs or execution counts."""

import pathlib

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
