"""The run secret: 32 random bytes, private and atomic on disk, stable across reopenings, and the
entropy of DP client sampling, which the public seed does not determine."""

import os
import stat

import pytest

from tff_lab.privacy import secret as secret_lib
from tff_lab.simulation import sampling


def test_created_once_private_and_stable(tmp_path):
  ckpt = str(tmp_path / 'checkpoints')
  first = secret_lib.load_or_create_run_secret(ckpt)
  assert isinstance(first, bytes) and len(first) == secret_lib.SECRET_BYTES
  path = os.path.join(ckpt, secret_lib.SECRET_FILENAME)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
  assert secret_lib.load_or_create_run_secret(ckpt) == first
  assert os.listdir(ckpt) == [secret_lib.SECRET_FILENAME]  # no temporary file left
  assert secret_lib.load_or_create_run_secret(str(tmp_path / 'other')) != first


def test_damaged_or_public_secret_is_refused(tmp_path):
  ckpt = str(tmp_path)
  secret_lib.load_or_create_run_secret(ckpt)
  path = os.path.join(ckpt, secret_lib.SECRET_FILENAME)
  os.chmod(path, 0o644)
  with pytest.raises(secret_lib.SecretError, match='chmod 600'):
    secret_lib.load_or_create_run_secret(ckpt)
  os.chmod(path, 0o600)
  with open(path, 'ab') as f:
    f.write(b'x')
  with pytest.raises(secret_lib.SecretError, match='damaged'):
    secret_lib.load_or_create_run_secret(ckpt)


def test_sampling_entropy_is_keyed_by_the_secret():
  a, b = b'\x01' * 32, b'\x02' * 32
  assert secret_lib.sampling_entropy(a) == secret_lib.sampling_entropy(a)
  assert secret_lib.sampling_entropy(a) != secret_lib.sampling_entropy(b)
  assert 0 <= secret_lib.sampling_entropy(a) < 2**256
  with pytest.raises(secret_lib.SecretError):
    secret_lib.sampling_entropy(b'short')


def test_secret_sampling_resumes_exactly_and_differs_from_the_public_seed(tmp_path):
  seed, n, m = 0, 100, 10
  entropy = secret_lib.sampling_entropy(secret_lib.load_or_create_run_secret(str(tmp_path)))
  private = [sampling.fixed_size_sample(n, m, entropy, r) for r in range(1, 21)]
  public = [sampling.fixed_size_sample(n, m, seed, r) for r in range(1, 21)]
  assert sum(p == q for p, q in zip(private, public)) == 0
  reopened = secret_lib.sampling_entropy(secret_lib.load_or_create_run_secret(str(tmp_path)))
  assert [sampling.fixed_size_sample(n, m, reopened, r) for r in range(1, 21)] == private


def test_created_without_hard_links(tmp_path, monkeypatch):
  def no_link(src, dst):
    raise PermissionError('no hard links here')

  monkeypatch.setattr(os, 'link', no_link)
  first = secret_lib.load_or_create_run_secret(str(tmp_path))
  assert secret_lib.load_or_create_run_secret(str(tmp_path)) == first
  assert os.listdir(tmp_path) == [secret_lib.SECRET_FILENAME]
  assert stat.S_IMODE(os.stat(tmp_path / secret_lib.SECRET_FILENAME).st_mode) == 0o600
