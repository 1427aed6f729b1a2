"""Builder options read from signatures: flag types, and builders whose options cannot be flags."""

from typing import Optional

import pytest

from tff_lab import builder_options


def _builder(weighted, n: int = 2, rate=0.5, name='a', on=False, cap: Optional[float] = None,
             loose=None):
  del weighted, n, rate, name, on, cap, loose


def test_option_types_follow_defaults_then_annotations():
  specs = builder_options.options(_builder, skip=('weighted',))
  assert {k: v.type for k, v in specs.items()} == {
      'n': int, 'rate': float, 'name': str, 'on': bool, 'cap': float, 'loose': None}
  with pytest.raises(ValueError, match="option 'loose' defaults to None without a type"):
    builder_options.check_options(_builder, 'task x', skip=('weighted',))
  with pytest.raises(ValueError, match="option 'weighted' has no default"):
    builder_options.check_options(lambda weighted, n=1: None, 'task x')
  with pytest.raises(TypeError, match='must be callable'):
    builder_options.check_options(3, 'task x')


@pytest.mark.parametrize('option, value, ok', [
    ('n', 3, True), ('n', 3.0, False), ('n', True, False), ('rate', 1, True),
    ('rate', 'x', False), ('on', 1, False), ('cap', None, True), ('name', 'b', True)])
def test_check_value(option, value, ok):
  spec = builder_options.options(_builder)[option]
  if ok:
    builder_options.check_value('task x', option, spec, value)
  else:
    with pytest.raises(ValueError, match=f"task x option '{option}' must be a"):
      builder_options.check_value('task x', option, spec, value)


def _documented(size: int = 2, mode: str = 'a', plain: bool = False):
  """Builds something.

  Args:
    size: How many
      clients, wrapped over two lines.
    mode (str): `a` or `b`.

  Returns:
    Nothing.
  """
  del size, mode, plain


def test_an_options_help_is_its_docstring_entry():
  specs = builder_options.options(_documented)
  assert specs['size'].help == 'How many clients, wrapped over two lines.'
  assert specs['mode'].help == '`a` or `b`.'
  assert specs['plain'].help == ''  # undocumented: the flag's help falls back to its name
  assert builder_options.docstring_args(lambda: None) == {}
