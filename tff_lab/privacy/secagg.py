"""Secure aggregation with real masking, simulated in one process: the protocol core.

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", ACM CCS 2017 (IACR ePrint 2017/281).

This is the semi-honest protocol of the paper's Figure 4 (rounds 0, 1, 2 and 4; the consistency
check round and the signatures only matter against an active server). Clients and server are
separate objects that exchange serialised `bytes` only; the server never holds a secret.

0. AdvertiseKeys. Client u makes two X25519 key pairs: c_u to encrypt shares, s_u for masks.
   The server broadcasts the public keys of U1, the clients that sent them.
1. ShareKeys. u draws a self-mask seed b_u and splits s_u^SK and b_u into t-of-|U1| Shamir shares
   over GF(p), p = 2^256 + 297 (one share per client of U1, itself included). It sends peer v
   its shares under AES-GCM with key HKDF(X25519(c_u^SK, c_v^PK)); the server only routes the
   ciphertexts. U2 is the set of clients that sent shares.
2. MaskedInputCollection. u sends
       y_u = x_u + PRG(b_u) + Σ_{v∈U2, u<v} PRG(s_uv) − Σ_{v∈U2, u>v} PRG(s_uv)  (mod 2^k),
   with s_uv = HKDF(X25519(s_u^SK, s_v^PK)), the same seed for u and v, and PRG = AES-256-CTR.
   Without the seeds, y_u is uniform on Z_{2^k}^d. U3 is the set of clients whose y arrived.
4. Unmasking. The server announces U3. Each responding client (U5) reveals its share of b_v for
   every v ∈ U3 and of s_v^SK for every v ∈ U2 \\ U3, never both for one v. With t shares of
   each, the server rebuilds them, removes PRG(b_u) for u ∈ U3 and the pairwise masks the
   dropped clients of U2 \\ U3 left in the survivors' vectors, and obtains Σ_{u∈U3} x_u mod 2^k
   exactly.

Any round that sees fewer than t clients aborts with `InsufficientSharesError`, and shares that do
not lie on one polynomial raise `InconsistentSharesError`: a wrong sum is never returned.

Inputs are vectors in Z_{2^k}; `FixedPointEncoder` maps real vectors there. Training with
`--secure_aggregation` runs this protocol every round (`tff_lab.algorithms.secure_rounds`). Every
message is counted in `ProtocolCost`; `expected_bytes` gives the same totals in closed form.

Randomness comes from `os.urandom` unless a `seed` is given. Seeded runs derive the keys from
NumPy's generator: reproducible for tests and benchmarks, and not secure.
"""

import dataclasses
import os
import time
from typing import Callable, Collection, Mapping, Optional

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers import modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# The smallest prime above 2^256: every 32-byte secret is a field element.
FIELD_PRIME = 2**256 + 297
FIELD_BYTES = 33
ID_BYTES = 4
KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
# Message sizes (bytes); see `expected_bytes`.
KEYS_MESSAGE_BYTES = ID_BYTES + 2 * KEY_BYTES
# Routing header (from, to), nonce, AES-GCM of (from, to, share of s^SK, share of b), tag.
SHARES_MESSAGE_BYTES = 4 * ID_BYTES + _NONCE_BYTES + 2 * FIELD_BYTES + _TAG_BYTES
REVEALED_SHARE_BYTES = ID_BYTES + FIELD_BYTES

RandBytes = Callable[[int], bytes]


class InsufficientSharesError(RuntimeError):
  """Fewer than `threshold` clients (or shares) are left: the protocol aborts."""


class InconsistentSharesError(RuntimeError):
  """Shamir shares of one secret do not lie on one polynomial of degree threshold − 1."""


# ------------------------------------------------------------------------------------------------
# Fixed-point encoding into Z_{2^k}.


class FixedPointEncoder:
  """Real vectors in [−r, r] to Z_{2^k}, so that sums of up to n of them decode exactly.

  encode(x) = round(clip(x, −r, r) · s) mod 2^k, with s = L / r and L = ⌊(2^(k−1) − 1) / n⌋.
  Each encoded coordinate is an integer of magnitude ≤ L, so the sum of n of them has magnitude
  ≤ n·L ≤ 2^(k−1) − 1 and is recovered from its residue mod 2^k by the centred lift. More than n
  clients can overflow, and `decode_sum` refuses them. Rounding is to nearest (ties to even), an
  error of at most r / (2L) per coordinate and client: 2.3e-9·r for k = 32 and n = 10.
  """

  def __init__(self, clip_range: float, num_clients: int, modulus_bits: int = 32):
    if not np.isfinite(clip_range) or clip_range <= 0:
      raise ValueError(f'clip_range must be positive and finite; got {clip_range}')
    if not isinstance(modulus_bits, int) or not 1 <= modulus_bits <= 32:
      raise ValueError(f'modulus_bits must be an integer in [1, 32]; got {modulus_bits!r}')
    if not isinstance(num_clients, int) or num_clients < 1:
      raise ValueError(f'num_clients must be a positive integer; got {num_clients!r}')
    self.clip_range = float(clip_range)
    self.num_clients = num_clients
    self.modulus_bits = modulus_bits
    self.modulus = 2**modulus_bits
    self.max_level = (2**(modulus_bits - 1) - 1) // num_clients
    if self.max_level < 1:
      raise ValueError(f'modulus_bits={modulus_bits} cannot hold the sum of {num_clients} '
                       'clients; use more bits')
    self.scale = self.max_level / self.clip_range

  def encode(self, x: np.ndarray) -> np.ndarray:
    """`x` (any real array) as uint64 residues in [0, 2^k)."""
    clipped = np.clip(np.asarray(x, np.float64), -self.clip_range, self.clip_range)
    levels = np.rint(clipped * self.scale).astype(np.int64)
    return np.mod(levels, self.modulus).astype(np.uint64)

  def decode_sum(self, residues: np.ndarray, num_summed: int) -> np.ndarray:
    """The real sum of `num_summed` encoded vectors from the residue of their sum."""
    if num_summed > self.num_clients:
      raise ValueError(f'{num_summed} summands can overflow an encoder made for '
                       f'{self.num_clients} clients')
    residues = np.asarray(residues, np.int64)
    centred = np.where(residues >= self.modulus // 2, residues - self.modulus, residues)
    return centred / self.scale


# ------------------------------------------------------------------------------------------------
# Primitives: randomness, Shamir sharing over GF(FIELD_PRIME), key derivation, PRG, packing.


def make_randbytes(seed: Optional[int] = None) -> RandBytes:
  """`os.urandom`, or a reproducible (insecure) stream from NumPy's PCG64 for a given seed."""
  if seed is None:
    return os.urandom
  return np.random.default_rng(seed).bytes


def _random_field_element(randbytes: RandBytes) -> int:
  # 64 extra bits make the bias of the reduction mod p negligible (< 2^-64).
  return int.from_bytes(randbytes(FIELD_BYTES + 8), 'little') % FIELD_PRIME


def shamir_split(secret: int, xs: Collection[int], threshold: int,
                 randbytes: RandBytes = os.urandom) -> dict[int, int]:
  """Shares f(x) for each x in `xs` of a random polynomial f of degree threshold − 1, f(0) = secret."""
  if not 0 <= secret < FIELD_PRIME:
    raise ValueError('secret must be a field element')
  if not 1 <= threshold <= len(xs) or min(xs) < 1:
    raise ValueError(f'need 1 <= threshold <= len(xs) and xs >= 1; got threshold={threshold}, '
                     f'xs={sorted(xs)}')
  coefficients = [secret] + [_random_field_element(randbytes) for _ in range(threshold - 1)]

  def f(x):
    y = 0
    for c in reversed(coefficients):
      y = (y * x + c) % FIELD_PRIME
    return y

  return {x: f(x) for x in xs}


def _interpolate(points: list[tuple[int, int]], x: int) -> int:
  """Lagrange interpolation through `points`, evaluated at `x`, in GF(FIELD_PRIME)."""
  total = 0
  for i, (xi, yi) in enumerate(points):
    num, den = 1, 1
    for j, (xj, _) in enumerate(points):
      if j != i:
        num = num * (x - xj) % FIELD_PRIME
        den = den * (xi - xj) % FIELD_PRIME
    total = (total + yi * num * pow(den, -1, FIELD_PRIME)) % FIELD_PRIME
  return total


def shamir_reconstruct(shares: Mapping[int, int], threshold: int) -> int:
  """The secret f(0) from at least `threshold` shares {x: f(x)}.

  Raises:
    InsufficientSharesError: With fewer than `threshold` shares (any secret would fit them).
    InconsistentSharesError: If the shares beyond the first `threshold` disagree with them.
  """
  if len(shares) < threshold:
    raise InsufficientSharesError(f'{len(shares)} shares, need {threshold}')
  points = sorted(shares.items())
  basis = points[:threshold]
  for x, y in points[threshold:]:
    if _interpolate(basis, x) != y:
      raise InconsistentSharesError(f'share at x={x} is not on the polynomial')
  return _interpolate(basis, 0)


def _kdf(shared_secret: bytes, purpose: bytes) -> bytes:
  return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
              info=b'tff_lab secagg ' + purpose).derive(shared_secret)


def prg(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
  """`length` uniform elements of Z_{2^k} (uint64): AES-256-CTR keystream under `seed`."""
  keystream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(
      bytes(4 * length))
  words = np.frombuffer(keystream, dtype='<u4').astype(np.uint64)
  return words & np.uint64(2**modulus_bits - 1)


def pack(vector: np.ndarray, modulus_bits: int) -> bytes:
  """Elements of Z_{2^k} as a little-endian bit string, ⌈d·k/8⌉ bytes."""
  if modulus_bits in (8, 16, 32):
    return vector.astype(f'<u{modulus_bits // 8}').tobytes()
  bits = (vector[:, None] >> np.arange(modulus_bits, dtype=np.uint64)) & np.uint64(1)
  return np.packbits(bits.astype(np.uint8).ravel(), bitorder='little').tobytes()


def unpack(data: bytes, modulus_bits: int, length: int) -> np.ndarray:
  if modulus_bits in (8, 16, 32):
    return np.frombuffer(data, f'<u{modulus_bits // 8}').astype(np.uint64)
  bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder='little')
  bits = bits[:length * modulus_bits].reshape(length, modulus_bits).astype(np.uint64)
  return (bits << np.arange(modulus_bits, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def _public_bytes(key: x25519.X25519PrivateKey) -> bytes:
  return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_bytes(key: x25519.X25519PrivateKey) -> bytes:
  return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())


def _id(value: int) -> bytes:
  return value.to_bytes(ID_BYTES, 'little')


def _read_id(data: bytes, offset: int = 0) -> int:
  return int.from_bytes(data[offset:offset + ID_BYTES], 'little')


def _pairwise_mask(own_secret: x25519.X25519PrivateKey, peer_public: bytes, length: int,
                   modulus_bits: int) -> np.ndarray:
  shared = own_secret.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
  return prg(_kdf(shared, b'pairwise mask'), length, modulus_bits)


def _parse_keys(broadcast: bytes) -> dict[int, tuple[bytes, bytes]]:
  """{client id: (c public key, s public key)} from the AdvertiseKeys broadcast."""
  keys = {}
  for start in range(0, len(broadcast), KEYS_MESSAGE_BYTES):
    message = broadcast[start:start + KEYS_MESSAGE_BYTES]
    keys[_read_id(message)] = (message[ID_BYTES:ID_BYTES + KEY_BYTES],
                               message[ID_BYTES + KEY_BYTES:])
  return keys


def _parse_ids(data: bytes) -> list[int]:
  return [_read_id(data, i) for i in range(0, len(data), ID_BYTES)]


# ------------------------------------------------------------------------------------------------
# The two parties.


class SecAggClient:
  """One client's side of the protocol. Its secrets never leave it except as Shamir shares."""

  def __init__(self, client_id: int, modulus_bits: int, threshold: int, randbytes: RandBytes):
    self.id = client_id
    self._bits = modulus_bits
    self._threshold = threshold
    self._randbytes = randbytes
    self._c_key = x25519.X25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
    self._s_key = x25519.X25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
    self._b_seed = randbytes(KEY_BYTES)
    self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
    self._held_shares: dict[int, tuple[int, int]] = {}  # owner -> (share of s^SK, share of b)
    self._u2: list[int] = []

  def _require(self, clients: Collection[int], stage: str) -> None:
    if len(clients) < self._threshold:
      raise InsufficientSharesError(f'client {self.id}: {len(clients)} clients at {stage}, '
                                    f'threshold {self._threshold}')

  def _share_key(self, peer: int) -> AESGCM:
    peer_c_public = x25519.X25519PublicKey.from_public_bytes(self._peer_keys[peer][0])
    return AESGCM(_kdf(self._c_key.exchange(peer_c_public), b'share encryption'))

  def advertise_keys(self) -> bytes:
    """Round 0: id ‖ c^PK ‖ s^PK."""
    return _id(self.id) + _public_bytes(self._c_key) + _public_bytes(self._s_key)

  def share_keys(self, keys_broadcast: bytes) -> list[bytes]:
    """Round 1: for each peer, from ‖ to ‖ nonce ‖ AES-GCM(from ‖ to ‖ s^SK share ‖ b share)."""
    self._peer_keys = _parse_keys(keys_broadcast)
    self._require(self._peer_keys, 'ShareKeys')
    xs = [v + 1 for v in self._peer_keys]
    s_shares = shamir_split(int.from_bytes(_private_bytes(self._s_key), 'little'), xs,
                            self._threshold, self._randbytes)
    b_shares = shamir_split(int.from_bytes(self._b_seed, 'little'), xs, self._threshold,
                            self._randbytes)
    self._held_shares[self.id] = (s_shares[self.id + 1], b_shares[self.id + 1])
    messages = []
    for v in self._peer_keys:
      if v == self.id:
        continue
      header = _id(self.id) + _id(v)
      nonce = self._randbytes(_NONCE_BYTES)
      plaintext = (header + s_shares[v + 1].to_bytes(FIELD_BYTES, 'little')
                   + b_shares[v + 1].to_bytes(FIELD_BYTES, 'little'))
      messages.append(header + nonce + self._share_key(v).encrypt(nonce, plaintext, header))
    return messages

  def masked_input(self, x: np.ndarray, shares_for_me: bytes) -> bytes:
    """Round 2: id ‖ pack(y), y = x + PRG(b) ± pairwise masks with U2 (mod 2^k)."""
    for start in range(0, len(shares_for_me), SHARES_MESSAGE_BYTES):
      message = shares_for_me[start:start + SHARES_MESSAGE_BYTES]
      header, nonce = message[:2 * ID_BYTES], message[2 * ID_BYTES:2 * ID_BYTES + _NONCE_BYTES]
      sender = _read_id(header)
      plaintext = self._share_key(sender).decrypt(
          nonce, message[2 * ID_BYTES + _NONCE_BYTES:], header)
      if plaintext[:2 * ID_BYTES] != _id(sender) + _id(self.id):
        raise ValueError(f'client {self.id}: share message from {sender} is misaddressed')
      shares = plaintext[2 * ID_BYTES:]
      self._held_shares[sender] = (int.from_bytes(shares[:FIELD_BYTES], 'little'),
                                   int.from_bytes(shares[FIELD_BYTES:], 'little'))
    self._u2 = sorted(self._held_shares)
    self._require(self._u2, 'MaskedInputCollection')
    modulus = np.uint64(2**self._bits)
    x = np.asarray(x)
    if x.ndim != 1 or not np.all((x >= 0) & (x < 2**self._bits)):
      raise ValueError(f'client {self.id}: input must be a vector of integers in [0, 2^k)')
    y = (x.astype(np.uint64) + prg(self._b_seed, len(x), self._bits)) % modulus
    for v in self._u2:
      if v == self.id:
        continue
      mask = _pairwise_mask(self._s_key, self._peer_keys[v][1], len(x), self._bits)
      y = (y + mask) % modulus if self.id < v else (y + modulus - mask) % modulus
    return _id(self.id) + pack(y, self._bits)

  def unmask(self, u3_broadcast: bytes) -> bytes:
    """Round 4: id ‖ (v ‖ share) for v ∈ U2: b_v's share if v ∈ U3, else s_v^SK's share."""
    u3 = set(_parse_ids(u3_broadcast))
    self._require(u3, 'Unmasking')
    if not u3 <= set(self._u2):
      raise ValueError(f'client {self.id}: U3 is not a subset of U2; refusing to reveal shares')
    response = _id(self.id)
    for v in self._u2:
      s_share, b_share = self._held_shares[v]
      response += _id(v) + (b_share if v in u3 else s_share).to_bytes(FIELD_BYTES, 'little')
    return response


class SecAggServer:
  """The server's side: routes messages and unmasks the sum. It only ever holds public keys,
  ciphertexts, masked vectors and the shares clients reveal in round 4."""

  def __init__(self, vector_length: int, modulus_bits: int, threshold: int):
    self._length = vector_length
    self._bits = modulus_bits
    self._threshold = threshold
    self._keys: dict[int, tuple[bytes, bytes]] = {}
    self._u2: list[int] = []
    self.masked_inputs: dict[int, np.ndarray] = {}  # the server's whole view of the inputs

  def _require(self, clients: Collection[int], stage: str) -> None:
    if len(clients) < self._threshold:
      raise InsufficientSharesError(f'server: {len(clients)} clients at {stage}, threshold '
                                    f'{self._threshold}; aborting')

  def collect_keys(self, messages: list[bytes]) -> bytes:
    """Round 0: returns the broadcast of U1's public keys."""
    broadcast = b''.join(messages)
    self._keys = _parse_keys(broadcast)
    self._require(self._keys, 'AdvertiseKeys')
    return broadcast

  def route_shares(self, messages_by_sender: Mapping[int, list[bytes]]) -> dict[int, bytes]:
    """Round 1: the ciphertexts addressed to each client of U2 (the clients that sent shares)."""
    self._u2 = sorted(messages_by_sender)
    self._require(self._u2, 'ShareKeys')
    inbox = {v: b'' for v in self._u2}
    for messages in messages_by_sender.values():
      for message in messages:
        recipient = _read_id(message, ID_BYTES)
        if recipient in inbox:
          inbox[recipient] += message
    return inbox

  def collect_masked_inputs(self, messages: list[bytes]) -> bytes:
    """Round 2: stores the masked vectors; returns the U3 broadcast."""
    for message in messages:
      self.masked_inputs[_read_id(message)] = unpack(message[ID_BYTES:], self._bits, self._length)
    self._require(self.masked_inputs, 'MaskedInputCollection')
    return b''.join(_id(u) for u in sorted(self.masked_inputs))

  def unmask(self, responses: list[bytes]) -> np.ndarray:
    """Round 4: Σ_{u∈U3} x_u mod 2^k from the masked vectors and the revealed shares."""
    self._require(responses, 'Unmasking')
    shares: dict[int, dict[int, int]] = {v: {} for v in self._u2}
    for response in responses:
      x = _read_id(response) + 1
      for start in range(ID_BYTES, len(response), REVEALED_SHARE_BYTES):
        owner = _read_id(response, start)
        shares[owner][x] = int.from_bytes(response[start + ID_BYTES:
                                                   start + REVEALED_SHARE_BYTES], 'little')
    modulus = np.uint64(2**self._bits)
    u3 = sorted(self.masked_inputs)
    total = np.zeros(self._length, np.uint64)
    for u in u3:
      b_seed = shamir_reconstruct(shares[u], self._threshold).to_bytes(KEY_BYTES, 'little')
      total = (total + self.masked_inputs[u] + modulus - prg(b_seed, self._length, self._bits)
               ) % modulus
    for v in sorted(set(self._u2) - set(u3)):
      s_key = x25519.X25519PrivateKey.from_private_bytes(
          shamir_reconstruct(shares[v], self._threshold).to_bytes(KEY_BYTES, 'little'))
      for u in u3:
        mask = _pairwise_mask(s_key, self._keys[u][1], self._length, self._bits)
        # u added +mask if u < v and −mask otherwise; undo it.
        total = (total + modulus - mask) % modulus if u < v else (total + mask) % modulus
    return total


# ------------------------------------------------------------------------------------------------
# Running the protocol, and its cost.


@dataclasses.dataclass
class ProtocolCost:
  """Bytes each client sent (upload) and the server sent it (download), and compute seconds."""
  upload_bytes: dict[int, int]
  download_bytes: dict[int, int]
  client_seconds: dict[int, float]
  server_seconds: float

  @property
  def total_upload_bytes(self) -> int:
    return sum(self.upload_bytes.values())

  @property
  def total_download_bytes(self) -> int:
    return sum(self.download_bytes.values())


@dataclasses.dataclass
class SecAggResult:
  """The unmasked sum (uint64 residues mod 2^k), the clients it includes, what the server saw."""
  sum: np.ndarray
  included: tuple[int, ...]
  masked_inputs: dict[int, np.ndarray]
  cost: ProtocolCost


def default_threshold(num_clients: int) -> int:
  """⌊n/2⌋ + 1, a majority: the paper's choice against a server that lies about dropouts."""
  return num_clients // 2 + 1


def run_protocol(inputs: Mapping[int, np.ndarray], modulus_bits: int = 32,
                 threshold: Optional[int] = None, drop_after_keys: Collection[int] = (),
                 drop_after_sharing: Collection[int] = (),
                 drop_after_masking: Collection[int] = (),
                 seed: Optional[int] = None) -> SecAggResult:
  """Runs one secure aggregation of `inputs` {client id: vector in Z_{2^k}} with dropouts.

  Args:
    inputs: Each client's encoded vector (integers in [0, 2^k), all of one length).
    modulus_bits: k.
    threshold: t, shares needed to rebuild a secret; `default_threshold(n)` if None.
    drop_after_keys: Clients that vanish after AdvertiseKeys (in U1 only).
    drop_after_sharing: Clients that vanish after ShareKeys (U2 \\ U3): their masks are
      recovered and their inputs are not in the sum.
    drop_after_masking: Clients whose masked input arrives but who vanish before Unmasking
      (U3 \\ U5): their inputs are in the sum.
    seed: For reproducible (insecure) keys; None uses os.urandom.

  Raises:
    InsufficientSharesError: If fewer than t clients remain at any round.
  """
  ids = sorted(inputs)
  if len(ids) < 2:
    raise ValueError(f'secure aggregation needs at least 2 clients; got {len(ids)}')
  threshold = default_threshold(len(ids)) if threshold is None else threshold
  if not 2 <= threshold <= len(ids):
    raise ValueError(f'threshold must be in [2, {len(ids)}]; got {threshold}')
  lengths = {np.asarray(x).shape for x in inputs.values()}
  if len(lengths) != 1 or len(next(iter(lengths))) != 1:
    raise ValueError(f'inputs must be vectors of one length; got shapes {sorted(lengths)}')
  length = next(iter(lengths))[0]
  unknown = (set(drop_after_keys) | set(drop_after_sharing) | set(drop_after_masking)) - set(ids)
  if unknown:
    raise ValueError(f'cannot drop clients {sorted(unknown)}: they have no input')

  randbytes = make_randbytes(seed)
  up = {u: 0 for u in ids}
  down = {u: 0 for u in ids}
  client_seconds = {u: 0.0 for u in ids}
  server_seconds = 0.0

  def on_client(u, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    client_seconds[u] += time.perf_counter() - start
    up[u] += sum(map(len, out)) if isinstance(out, list) else len(out)
    return out

  def on_server(fn, *args):
    nonlocal server_seconds
    start = time.perf_counter()
    out = fn(*args)
    server_seconds += time.perf_counter() - start
    return out

  clients = {u: SecAggClient(u, modulus_bits, threshold, randbytes) for u in ids}
  server = SecAggServer(length, modulus_bits, threshold)
  keys = on_server(server.collect_keys, [on_client(u, clients[u].advertise_keys) for u in ids])
  u1 = ids
  for u in u1:
    down[u] += len(keys)
  u2 = [u for u in u1 if u not in drop_after_keys]
  inbox = on_server(server.route_shares,
                    {u: on_client(u, clients[u].share_keys, keys) for u in u2})
  for u in u2:
    down[u] += len(inbox[u])
  u3 = [u for u in u2 if u not in drop_after_sharing]
  u3_broadcast = on_server(server.collect_masked_inputs, [
      on_client(u, clients[u].masked_input, inputs[u], inbox[u]) for u in u3])
  for u in u3:
    down[u] += len(u3_broadcast)
  u5 = [u for u in u3 if u not in drop_after_masking]
  total = on_server(server.unmask, [on_client(u, clients[u].unmask, u3_broadcast) for u in u5])
  return SecAggResult(total, tuple(u3), dict(server.masked_inputs),
                      ProtocolCost(up, down, client_seconds, server_seconds))


def expected_bytes(n1, n2, n3, n5, vector_length: int, modulus_bits: int):
  """(total upload, total download) bytes of one run, in closed form.

  n1 ≥ n2 ≥ n3 ≥ n5 are the numbers of clients that advertised keys, shared them, sent masked
  input and answered the unmasking round.
  """
  masked_input = ID_BYTES + -(-vector_length * modulus_bits // 8)
  upload = (KEYS_MESSAGE_BYTES * n1 + SHARES_MESSAGE_BYTES * (n1 - 1) * n2
            + masked_input * n3 + (ID_BYTES + REVEALED_SHARE_BYTES * n2) * n5)
  download = (KEYS_MESSAGE_BYTES * n1 * n1 + SHARES_MESSAGE_BYTES * (n2 - 1) * n2
              + ID_BYTES * n3 * n3)
  return upload, download
