"""Durable file writes shared by the modules that must survive a kill (checkpoints, the privacy
ledger, the run secret): a rename is only durable once its directory is synced."""

import os


def fsync_dir(directory: str) -> None:
  """Flushes `directory`'s entries (after a rename or create in it) to disk, where supported."""
  try:
    fd = os.open(directory or '.', os.O_RDONLY)
  except OSError:  # a platform without directory file descriptors
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)
