"""Serving TFF's `worker_binary` on one IPv4 address instead of on every interface.

TFF 0.87's `worker_binary` always listens on `[::]:<port>`, i.e. on every IPv4 and IPv6 interface
(`tensorflow_federated/cc/simulation/servers.cc`), and has no flag to change that. Its gRPC
service is unauthenticated and unencrypted, and the computations it runs are TensorFlow graphs,
which can read and write files: whoever reaches the port can run code as the worker's user.

`bind_env(host)` returns an environment that preloads a small C shim whose `bind()` turns a
wildcard address (`[::]` or `0.0.0.0`) into `host`, so the worker listens on that address only
(127.0.0.1: this machine only). The shim is compiled once with the system C compiler and cached
under `$XDG_CACHE_HOME/tff_lab` (default `~/.cache/tff_lab`). `listening_addresses(pid)` reads what
a process actually listens on from /proc, so the launcher reports the real address, not the
worker's own log line (which says `[::]` whatever happens).
"""

import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile
from typing import Mapping, Optional

BIND_HOST_ENV = 'TFF_LAB_BIND_HOST'

_SHIM_SOURCE = r'''
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* bind() that replaces a wildcard address by the IPv4 address in $TFF_LAB_BIND_HOST. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real_bind)(int, const struct sockaddr *, socklen_t);
  if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
  const char *host = getenv("TFF_LAB_BIND_HOST");
  struct in_addr v4;
  if (addr && host && inet_pton(AF_INET, host, &v4) == 1) {
    if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
      struct sockaddr_in6 a6;
      memcpy(&a6, addr, sizeof a6);
      if (IN6_IS_ADDR_UNSPECIFIED(&a6.sin6_addr)) {  /* [::] -> [::ffff:host] (dual-stack socket) */
        memset(&a6.sin6_addr, 0, sizeof a6.sin6_addr);
        a6.sin6_addr.s6_addr[10] = a6.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&a6.sin6_addr.s6_addr[12], &v4, 4);
        return real_bind(fd, (const struct sockaddr *)&a6, sizeof a6);
      }
    } else if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
      struct sockaddr_in a4;
      memcpy(&a4, addr, sizeof a4);
      if (a4.sin_addr.s_addr == htonl(INADDR_ANY)) {  /* 0.0.0.0 -> host */
        a4.sin_addr = v4;
        return real_bind(fd, (const struct sockaddr *)&a4, sizeof a4);
      }
    }
  }
  return real_bind(fd, addr, len);
}
'''


class BindShimError(RuntimeError):
  """The bind shim could not be built (no C compiler, or compilation failed)."""


def build_bind_shim(cache_dir: Optional[str] = None) -> str:
  """Compiles the shim (once) and returns the path of the shared library."""
  cache_dir = cache_dir or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'tff_lab')
  digest = hashlib.sha256(_SHIM_SOURCE.encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f'bind_shim_{digest}.so')
  if os.path.isfile(path):
    return path
  compiler = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
  if compiler is None:
    raise BindShimError('no C compiler (cc) found to build the loopback bind shim')
  os.makedirs(cache_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
    source = os.path.join(tmp, 'bind_shim.c')
    with open(source, 'w') as f:
      f.write(_SHIM_SOURCE)
    built = os.path.join(tmp, 'bind_shim.so')
    result = subprocess.run([compiler, '-shared', '-fPIC', '-O2', '-o', built, source, '-ldl'],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
      first = (result.stderr.strip().splitlines() or ['?'])[0]
      raise BindShimError(f'building the loopback bind shim with {compiler} failed: {first}')
    os.replace(built, path)  # atomic: concurrent builders never see a partial file
  return path


def check_host(host: str) -> str:
  """Returns `host` as an IPv4 literal ('localhost' is 127.0.0.1).

  Raises:
    ValueError: If `host` is not an IPv4 address.
  """
  host = '127.0.0.1' if host == 'localhost' else host
  try:
    ipaddress.IPv4Address(host)
  except ValueError:
    raise ValueError(f'host must be an IPv4 address (127.0.0.1, this machine\'s address on the '
                     f'trusted network, or 0.0.0.0 for every interface), got {host!r}') from None
  return host


def bind_env(host: str, base_env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
  """An environment under which `worker_binary` listens on `host` only.

  Args:
    host: An IPv4 address; 'localhost' means 127.0.0.1.
    base_env: The environment to extend (default: this process's).

  Raises:
    ValueError: If `host` is not an IPv4 address, or is the wildcard 0.0.0.0.
    BindShimError: If the shim cannot be built.
  """
  host = check_host(host)
  if ipaddress.IPv4Address(host).is_unspecified:
    raise ValueError('host 0.0.0.0 means every interface; no bind shim is needed for it')
  env = dict(os.environ if base_env is None else base_env)
  preload = env.get('LD_PRELOAD')
  env['LD_PRELOAD'] = build_bind_shim() + (f' {preload}' if preload else '')
  env[BIND_HOST_ENV] = host
  return env


def _decode(hex_address: str) -> str:
  """An address from /proc/net/tcp{,6} ('0100007F:1F40') as 'ip:port'."""
  hex_ip, hex_port = hex_address.split(':')
  raw = b''.join(bytes.fromhex(hex_ip[i:i + 8])[::-1] for i in range(0, len(hex_ip), 8))
  ip = ipaddress.ip_address(raw)
  if ip.version == 6 and ip.ipv4_mapped is not None:
    ip = ip.ipv4_mapped
  port = int(hex_port, 16)
  return f'[{ip}]:{port}' if ip.version == 6 else f'{ip}:{port}'


def listening_addresses(pid: int) -> list[str]:
  """The TCP addresses process `pid` listens on, e.g. ['127.0.0.1:8000'] or ['[::]:8000']."""
  inodes = set()
  for fd in os.listdir(f'/proc/{pid}/fd'):
    try:
      target = os.readlink(f'/proc/{pid}/fd/{fd}')
    except OSError:
      continue
    if target.startswith('socket:['):
      inodes.add(target[len('socket:['):-1])
  found = []
  for table in ('tcp', 'tcp6'):
    with open(f'/proc/{pid}/net/{table}') as f:
      for line in f.readlines()[1:]:
        fields = line.split()
        if fields[3] == '0A' and fields[9] in inodes:  # state 0A = LISTEN
          found.append(_decode(fields[1]))
  return found


def is_wildcard(address: str) -> bool:
  """True for an address that listens on every interface ('0.0.0.0:N' or '[::]:N')."""
  return ipaddress.ip_address(address.rsplit(':', 1)[0].strip('[]')).is_unspecified
