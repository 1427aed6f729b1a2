"""--plugin: found in the command line, imported once, one line for a module that does not import."""

import sys

import pytest

from tff_lab import plugins


@pytest.mark.parametrize('argv, found', [
    (['prog'], []),
    (['prog', '--plugin=a.b', '--task=x', '--plugin', 'c', '-plugin=d'], ['a.b', 'c', 'd']),
    (['prog', '--plugins=a', '--plugin'], []),  # another flag; a trailing --plugin has no value
    (['prog', '--plugin=a', '--', '--plugin=b'], ['a']),  # absl stops at --
])
def test_plugins_in_argv(argv, found):
  assert plugins.plugins_in_argv(argv) == found


def test_load_imports_once_and_keeps_order(tmp_path, monkeypatch):
  (tmp_path / 't_plugin_counter.py').write_text(
      'import builtins\nbuiltins.t_plugin_imports = getattr(builtins, "t_plugin_imports", 0) + 1\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  assert plugins.load(['t_plugin_counter', 'json', 't_plugin_counter']) == (
      't_plugin_counter', 'json')
  plugins.load(['t_plugin_counter'])
  import builtins  # pylint: disable=g-import-not-at-top
  assert builtins.t_plugin_imports == 1
  del sys.modules['t_plugin_counter'], builtins.t_plugin_imports


@pytest.mark.parametrize('source, name, match', [
    (None, 't_plugin_missing', "^--plugin=t_plugin_missing: cannot import t_plugin_missing "
     "\\(ModuleNotFoundError: No module named 't_plugin_missing'\\)$"),
    ('raise RuntimeError("no\\nGPU")', 't_plugin_raises',
     '^--plugin=t_plugin_raises: cannot import t_plugin_raises \\(RuntimeError: no GPU\\)$'),
    (None, 'my-module', "is not a module name"),
])
def test_a_plugin_that_does_not_import_is_one_line(tmp_path, monkeypatch, capsys, source, name,
                                                    match):
  if source:
    (tmp_path / f'{name}.py').write_text(source)
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(plugins.PluginError, match=match):
    plugins.load([name])
  with pytest.raises(SystemExit) as exc:
    plugins.load_from_argv(['prog', f'--plugin={name}'])
  err = capsys.readouterr().err
  assert exc.value.code == 2 and err.startswith('error: --plugin=') and err.count('\n') == 1, err
