"""The per-run secret that client sampling draws from under DP.

Privacy amplification by subsampling (Balle, Barthe, Gaboardi, "Privacy Amplification by
Subsampling", NeurIPS 2018, arXiv:1807.01647) holds only against an adversary who does not know
which clients were sampled. tff_lab's sampling is a pure function of (seed, round), and the seed
is in config.json, so anyone holding the run directory could recompute every round's sample; for
them the discount does not apply (issue #16: the most-sampled client's own ε was 13.9 where 9.33
was reported). Under DP the sample is therefore a function of (secret, round), the secret being
32 bytes from `os.urandom` kept in the checkpoint directory:

* a resumed run reads the same secret and samples the same clients, so resume stays exact;
* the public seed no longer determines who took part. It still determines the initial model,
  each sampled client's shuffle seed (by its position in the sample, not by who it is), and the
  simulated fault roles (which of the sampled positions are Byzantine, drop or straggle);
* the secret is never written to config.json, metrics, summaries or logs. Its file is created
  with mode 0600 and written atomically (a kill leaves either no secret or the whole one).
  Whoever can read it can recompute the samples: share the run directory without it.

The samplers themselves (`tff_lab.simulation.sampling`) take an integer entropy: the public seed
without DP, `sampling_entropy(secret)` with it.
"""

import hashlib
import hmac
import os
import stat

from tff_lab import files

SECRET_FILENAME = 'run_secret'
SECRET_BYTES = 32
# Domain separation: the same secret could key other per-run draws later.
_SAMPLING_LABEL = b'tff_lab client sampling v1'


class SecretError(ValueError):
  """The run secret is damaged or readable by others."""


def _read(path: str) -> bytes:
  mode = stat.S_IMODE(os.stat(path).st_mode)
  if os.name == 'posix' and mode & 0o077:
    raise SecretError(f'run secret {path} is readable by others (mode {mode:04o}); '
                      f'chmod 600 it')
  with open(path, 'rb') as f:
    secret = f.read()
  if len(secret) != SECRET_BYTES:
    raise SecretError(f'run secret {path} has {len(secret)} bytes, not {SECRET_BYTES}: damaged; '
                      'without it the run cannot resume with the same clients')
  return secret


def load_or_create_run_secret(checkpoint_dir: str) -> bytes:
  """The run's 32-byte secret from `<checkpoint_dir>/run_secret`, created on first use.

  Creation is atomic: the bytes go to a private temporary file that is fsynced and then
  hard-linked into place, which fails if another process made the secret first (its secret is
  then used). Without hard links the file is renamed into place instead.

  Raises:
    SecretError: The file exists with the wrong size or a mode readable by group or others.
  """
  path = os.path.join(checkpoint_dir, SECRET_FILENAME)
  if os.path.exists(path):
    return _read(path)
  os.makedirs(checkpoint_dir, exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  try:
    os.write(fd, os.urandom(SECRET_BYTES))
    os.fsync(fd)
  finally:
    os.close(fd)
  try:
    os.link(tmp, path)
  except FileExistsError:
    pass
  except OSError:  # a file system without hard links: replace, unless a secret appeared
    if not os.path.exists(path):
      os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  files.fsync_dir(checkpoint_dir)
  return _read(path)


def sampling_entropy(secret: bytes) -> int:
  """The 256-bit integer that seeds client sampling under DP: HMAC-SHA256(secret, label).

  Pass it where the public seed goes without DP (`tff_lab.simulation.sampling`): each round's
  sample is then a function of (secret, round) that the seed does not reveal.
  """
  if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
    raise SecretError(f'secret must be {SECRET_BYTES} bytes')
  return int.from_bytes(hmac.new(secret, _SAMPLING_LABEL, hashlib.sha256).digest(), 'big')
