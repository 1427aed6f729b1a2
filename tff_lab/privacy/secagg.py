"""Secure aggregation with real masking, simulated in one process: the protocol core.

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", ACM CCS 2017 (IACR ePrint 2017/281).

The protocol of the paper's Figure 4. Clients and server are separate objects that exchange
serialised `bytes` only; the server never holds a secret. By default it is the honest-but-curious
version (rounds 0, 1, 2 and 4); with `active=True` it is the paper's version against an active
server: signed keys under a (simulated) PKI and the consistency-check round 3.

0. AdvertiseKeys. Client u makes two X25519 key pairs: c_u to encrypt shares, s_u for masks.
   The server broadcasts the public keys of U1, the clients that sent them. Active: u signs
   (u, c_u^PK, s_u^PK) with its Ed25519 key d_u, registered in the PKI.
1. ShareKeys. u checks the broadcast (below), draws a self-mask seed b_u and splits s_u^SK and
   b_u into t-of-|U1| Shamir shares over GF(p), p = 2^256 + 297 (one share per client of U1,
   itself included). It sends peer v its shares under AES-GCM with key
   HKDF(X25519(c_u^SK, c_v^PK)); the server only routes the ciphertexts. U2 is the set of clients
   that sent shares.
2. MaskedInputCollection. u sends
       y_u = x_u + PRG(b_u) + Σ_{v∈U2, u<v} PRG(s_uv) − Σ_{v∈U2, u>v} PRG(s_uv)  (mod 2^k),
   with s_uv = HKDF(X25519(s_u^SK, s_v^PK)), the same seed for u and v, and PRG = AES-256-CTR.
   Without the seeds, y_u is uniform on Z_{2^k}^d. U3 is the set of clients whose y arrived.
3. ConsistencyCheck (active only). The server announces U3; each client of U3 signs
   (H(key broadcast), U3) and U4 is the set of clients that did. The server forwards their
   signatures; a client verifies every one against the U3 *it* was sent, and aborts on any
   mismatch, so a server cannot show different survivor lists to different clients.
4. Unmasking. The server announces U3 (active: the U4 signatures). Each responding client (U5)
   reveals its share of b_v for every v ∈ U3 and of s_v^SK for every v ∈ U2 \\ U3. With t shares
   of each, the server rebuilds them, removes PRG(b_u) for u ∈ U3 and the pairwise masks the
   dropped clients of U2 \\ U3 left in the survivors' vectors, and obtains Σ_{u∈U3} x_u mod 2^k
   exactly.

**Rules each client enforces itself**, against a server that deviates; each refusal raises a
`ProtocolViolation` subclass that names the rule, and the client then answers nothing more:
  * `StageOrderViolation`: each stage is answered at most once, in order.
  * `KeyBroadcastViolation`: the key broadcast holds the client's own keys unchanged, every id
    once and every public key distinct (as Flower's SecAgg+ checks).
  * `ThresholdViolation`: t must be a strict majority of the clients the broadcast advertises,
    2t > |U1|. Every holder of u's shares answers the unmasking request once, revealing one kind
    of share of u; a server that wants both b_u and s_u^SK needs two disjoint sets of t holders,
    so 2t ≤ |U1|. With t ≤ |U1|/2 it can send different survivor lists to two halves and rebuild
    both (tested).
  * `SelfExclusionViolation`: an unmasking request that leaves out the client itself is a lie (the
    client is answering), and obeying it would reveal a share of its own s_u^SK.
  * `ShareRevealViolation`: never both kinds of share of one peer. "The run" is one set of keys:
    keys and b seeds are fresh per client and round (a client object is one round's client), so
    shares of round r's secrets exist only in round r's objects, and revealing b_v's share in one
    round and s_v^SK's in another reveals nothing (they are shares of different secrets). Within
    the round a ledger of (peer, kind) revealed backs up the stage rule: a client that answered
    an unmasking request once never answers another, and could not reveal the other kind even if
    the stage rule were lifted. Keys reused across rounds would need the ledger to outlive the
    round; this module never reuses them.
  * Active: `SignatureViolation` for a key not signed by its owner's PKI key (no substitution, no
    invented clients), `ConsistencyViolation` for survivor lists that differ.

**The server object** refuses what would corrupt the sum: with `UnexpectedInputViolation`,
messages from unknown ids or twice from one id, messages of the wrong length, and a masked input
after the survivor list was broadcast (a late input); with `StageOrderViolation`, any stage out of
order or twice. It unmasks exactly the U3 it broadcast.

**What the two modes stop.** The honest-but-curious mode with these checks stops repeated
unmasking, self-exclusion, minority thresholds with split survivor lists, and a key substitution
that reuses one key or changes the client's own; it cannot stop a server that substitutes a
distinct key of its own for every peer in one client's broadcast (the client cannot tell a fresh
key from a real one; tested: it recovers the input) or that invents t clients of its own (it
then holds t shares of everything). `active=True` stops both, since every key must carry its
owner's PKI signature (tested), and detects different survivor lists before any share is
revealed. It costs 64 bytes of signature per key message and per client in the consistency
round (`expected_bytes`; measured in BUILD.md).

Any round that sees fewer than t clients aborts with `InsufficientSharesError`, and shares that do
not lie on one polynomial raise `InconsistentSharesError`: a wrong sum is never returned by an
honest server. (A malicious *client* can still spoil the sum, with a wrong input or, when exactly
t shares are revealed, a wrong share: robustness to clients is outside the paper's protocol.) All
three errors derive from `SecAggError`.

Inputs are vectors in Z_{2^k}; `FixedPointEncoder` maps real vectors there. Training with
`--secure_aggregation` runs this protocol every round (`tff_lab.algorithms.secure_rounds`); what
the server learns there beyond the sum (metrics, DP's pre-noise sum) is listed in that module.
Every message is counted in `ProtocolCost`; `expected_bytes` gives the same totals in closed form.

Randomness comes from `os.urandom` unless a `seed` is given. Seeded runs derive the keys from
NumPy's generator: reproducible for tests and benchmarks, and not secure.
"""

import dataclasses
import functools
import hashlib
import os
import time
import types
from typing import Callable, Collection, Mapping, Optional

import numpy as np
from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
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
SIGNATURE_BYTES = 64  # Ed25519
_NONCE_BYTES = 12
_TAG_BYTES = 16
_DIGEST_BYTES = 32
# Message sizes (bytes); see `expected_bytes`.
KEYS_MESSAGE_BYTES = ID_BYTES + 2 * KEY_BYTES  # active: + SIGNATURE_BYTES
# Routing header (from, to), nonce, AES-GCM of (from, to, share of s^SK, share of b), tag.
SHARES_MESSAGE_BYTES = 4 * ID_BYTES + _NONCE_BYTES + 2 * FIELD_BYTES + _TAG_BYTES
REVEALED_SHARE_BYTES = ID_BYTES + FIELD_BYTES
CONSISTENCY_MESSAGE_BYTES = ID_BYTES + SIGNATURE_BYTES  # active only
# Domain separation of the two kinds of signature.
_KEYS_LABEL = b'tff_lab secagg keys'
_SURVIVORS_LABEL = b'tff_lab secagg survivors'

RandBytes = Callable[[int], bytes]


class SecAggError(RuntimeError):
  """The protocol aborted: no sum is returned."""


class InsufficientSharesError(SecAggError):
  """Fewer than `threshold` clients (or shares) are left: the protocol aborts."""


class InconsistentSharesError(SecAggError):
  """Shamir shares of one secret do not lie on one polynomial of degree threshold − 1."""


class ProtocolViolation(SecAggError):
  """A message breaks a rule of the protocol; the party that received it aborts.

  Subclasses name the rule (`rule`); the message says which party refused and why.
  """
  rule = 'messages follow the protocol'

  def __init__(self, party: str, detail: Optional[str] = None):
    """`party` refuses because of `detail`; with `detail` None, `party` is the whole message."""
    super().__init__(party if detail is None else f'{party} refuses: {detail} (rule: {self.rule})')


class StageOrderViolation(ProtocolViolation):
  rule = 'each stage is answered at most once, in order'


class KeyBroadcastViolation(ProtocolViolation):
  rule = "the key broadcast holds the client's own keys unchanged and only distinct keys"


class ThresholdViolation(ProtocolViolation):
  rule = 'the threshold is a strict majority of the advertised clients, 2t > n'


class SelfExclusionViolation(ProtocolViolation):
  rule = 'an unmasking request includes the client that answers it'


class ShareRevealViolation(ProtocolViolation):
  rule = 'never reveal both the b share and the s^SK share of one peer'


class MalformedMessageViolation(ProtocolViolation):
  rule = 'messages are well formed, authentic and addressed to their receiver'


class SignatureViolation(ProtocolViolation):
  rule = "every advertised key carries its owner's signature under the PKI (active security)"


class ConsistencyViolation(ProtocolViolation):
  rule = 'every survivor signed the same survivor list (active security)'


class UnexpectedInputViolation(ProtocolViolation):
  rule = ('the server takes one well-formed message per expected client, and none after its '
          'stage closed')


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


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def shamir_split(secret: int, xs: Collection[int], threshold: int,
                 randbytes: RandBytes = os.urandom) -> dict[int, int]:
  """Shares f(x) for each x in `xs` of a random polynomial f of degree threshold − 1, f(0) = secret.

  Raises:
    ValueError: Unless 2 <= threshold <= len(xs), xs >= 1 and distinct (t = 1 would make every
      share equal to the secret).
  """
  if not 0 <= secret < FIELD_PRIME:
    raise ValueError('secret must be a field element')
  xs = list(xs)
  if (not _is_int(threshold) or not 2 <= threshold <= len(xs) or min(xs) < 1
      or len(set(xs)) != len(xs)):
    raise ValueError(f'need 2 <= threshold <= len(xs) and distinct xs >= 1 (threshold 1 makes '
                     f'every share the secret); got threshold={threshold}, xs={sorted(xs)}')
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


def packed_bytes(length: int, modulus_bits: int) -> int:
  """The size of `pack` of a `length`-vector."""
  return -(-length * modulus_bits // 8)


def _public_bytes(key) -> bytes:
  return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_bytes(key: x25519.X25519PrivateKey) -> bytes:
  return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())


def _id(value: int) -> bytes:
  return value.to_bytes(ID_BYTES, 'little')


def _read_id(data: bytes, offset: int = 0) -> int:
  return int.from_bytes(data[offset:offset + ID_BYTES], 'little')


def _secret_bytes(value: int) -> bytes:
  """A reconstructed 32-byte secret; values beyond 2^256 mean shares that were not of one."""
  if value >= 2**(8 * KEY_BYTES):
    raise InconsistentSharesError('the reconstructed secret is not a 32-byte value')
  return value.to_bytes(KEY_BYTES, 'little')


def _ids_bytes(ids: Collection[int]) -> bytes:
  return b''.join(_id(u) for u in sorted(ids))


def _pairwise_mask(own_secret: x25519.X25519PrivateKey, peer_public: bytes, length: int,
                   modulus_bits: int) -> np.ndarray:
  shared = own_secret.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
  return prg(_kdf(shared, b'pairwise mask'), length, modulus_bits)


def _keys_signed_message(client_id: int, c_public: bytes, s_public: bytes) -> bytes:
  return _KEYS_LABEL + _id(client_id) + c_public + s_public


def _survivors_signed_message(keys_digest: bytes, u3: Collection[int]) -> bytes:
  return _SURVIVORS_LABEL + keys_digest + _ids_bytes(u3)


def _chunks(data: bytes, size: int, party: str, what: str) -> list[bytes]:
  if len(data) % size:
    raise MalformedMessageViolation(party, f'{what} of {len(data)} bytes is not a whole number '
                                    f'of {size}-byte entries')
  return [data[i:i + size] for i in range(0, len(data), size)]


def _parse_keys(broadcast: bytes, signed: bool, party: str
                ) -> dict[int, tuple[bytes, bytes, bytes]]:
  """{client id: (c public key, s public key, signature or b'')} from the AdvertiseKeys broadcast.

  Raises:
    MalformedMessageViolation: For a broadcast that is not whole entries.
    KeyBroadcastViolation: For an id advertised twice.
  """
  size = KEYS_MESSAGE_BYTES + (SIGNATURE_BYTES if signed else 0)
  keys = {}
  for message in _chunks(broadcast, size, party, 'the key broadcast'):
    u = _read_id(message)
    if u in keys:
      raise KeyBroadcastViolation(party, f'client {u} is advertised twice')
    keys[u] = (message[ID_BYTES:ID_BYTES + KEY_BYTES],
               message[ID_BYTES + KEY_BYTES:KEYS_MESSAGE_BYTES], message[KEYS_MESSAGE_BYTES:])
  return keys


def _parse_ids(data: bytes, party: str, what: str) -> list[int]:
  ids = [_read_id(chunk) for chunk in _chunks(data, ID_BYTES, party, what)]
  if len(set(ids)) != len(ids):
    raise MalformedMessageViolation(party, f'{what} lists a client twice')
  return ids


def _keys_digest(keys: Mapping[int, tuple[bytes, ...]]) -> bytes:
  """SHA-256 of the key broadcast as one client saw it, in id order (binds signatures to it)."""
  digest = hashlib.sha256()
  for u in sorted(keys):
    digest.update(_id(u) + b''.join(keys[u]))
  return digest.digest()


class SimulatedPKI:
  """A trusted registry of each client's Ed25519 verification key: a stand-in for certificates.

  `enroll` gives a client its signing key d_u and records d_u^PK; clients verify signatures
  against the registry. The server has no signing key and cannot enroll clients, so it cannot
  substitute or invent keys.
  """

  def __init__(self):
    self._verification_keys: dict[int, ed25519.Ed25519PublicKey] = {}

  def enroll(self, client_id: int, randbytes: RandBytes = os.urandom
             ) -> ed25519.Ed25519PrivateKey:
    """A new signing key for `client_id`, whose public key the registry records."""
    if client_id in self._verification_keys:
      raise ValueError(f'client {client_id} is already enrolled')
    key = ed25519.Ed25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
    self._verification_keys[client_id] = key.public_key()
    return key

  def verify(self, client_id: int, signature: bytes, message: bytes) -> bool:
    """Whether `signature` on `message` is by `client_id`'s registered key."""
    key = self._verification_keys.get(client_id)
    if key is None:
      return False
    try:
      key.verify(signature, message)
    except crypto_exceptions.InvalidSignature:
      return False
    return True


# ------------------------------------------------------------------------------------------------
# The two parties.


def _stage(name: str):
  """Runs a client or server stage under the stage-order rule; any refusal aborts the party."""

  def decorate(method):

    @functools.wraps(method)
    def run(self, *args, **kwargs):
      self._enter_stage(name)
      try:
        return method(self, *args, **kwargs)
      except BaseException:
        self._aborted = True
        raise

    return run

  return decorate


class _Party:
  """Stage bookkeeping shared by client and server: each stage once, in order; none after a
  refusal."""

  _stages: tuple[str, ...] = ()

  def __init__(self, name: str):
    self._name = name
    self._next_stage = 0
    self._aborted = False

  def _enter_stage(self, stage: str) -> None:
    if self._aborted:
      raise StageOrderViolation(self._name, f'{stage} requested after this party aborted')
    done = self._stages[:self._next_stage]
    expected = self._stages[self._next_stage] if self._next_stage < len(self._stages) else None
    if stage != expected:
      when = 'again' if stage in done else f'before {expected}' if expected else 'after the end'
      raise StageOrderViolation(self._name, f'{stage} requested {when}')
    self._next_stage += 1


class SecAggClient(_Party):
  """One client's side of the protocol. Its secrets never leave it except as Shamir shares.

  It enforces the protocol's rules itself (module docstring): the `_check_*` methods and the
  stage order. A client that refused once answers nothing more.
  """

  def __init__(self, client_id: int, modulus_bits: int, threshold: int, randbytes: RandBytes,
               signing_key: Optional[ed25519.Ed25519PrivateKey] = None,
               pki: Optional[SimulatedPKI] = None):
    """Makes the client's keys for one round.

    Args:
      client_id: u.
      modulus_bits: k.
      threshold: t >= 2; checked to be a strict majority of the advertised clients at ShareKeys.
      randbytes: The client's randomness.
      signing_key: Active security: u's PKI signing key d_u (with `pki`).
      pki: Active security: the registry of every client's verification key.

    Raises:
      ValueError: For t < 2, or only one of `signing_key` and `pki`.
    """
    if not _is_int(threshold) or threshold < 2:
      raise ValueError(f'threshold must be an integer >= 2 (with t=1 every Shamir share is the '
                       f'secret); got {threshold!r}')
    if (signing_key is None) != (pki is None):
      raise ValueError('active security needs both signing_key and pki')
    super().__init__(f'client {client_id}')
    self.id = client_id
    self.active = pki is not None
    self._stages = (('advertise_keys', 'share_keys', 'masked_input', 'consistency_check',
                     'unmask') if self.active else
                    ('advertise_keys', 'share_keys', 'masked_input', 'unmask'))
    self._bits = modulus_bits
    self._threshold = threshold
    self._randbytes = randbytes
    self._signing_key = signing_key
    self._pki = pki
    self._c_key = x25519.X25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
    self._s_key = x25519.X25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
    self._b_seed = randbytes(KEY_BYTES)
    self._peer_keys: dict[int, tuple[bytes, bytes, bytes]] = {}
    self._keys_digest = b''
    self._held_shares: dict[int, tuple[int, int]] = {}  # owner -> (share of s^SK, share of b)
    self._u2: list[int] = []
    self._u3: list[int] = []  # active: the survivor list this client signed
    self._revealed: dict[int, str] = {}  # owner -> 'b' or 's', the kind of share revealed

  def _own_keys(self) -> tuple[bytes, bytes]:
    return _public_bytes(self._c_key), _public_bytes(self._s_key)

  def _require(self, clients: Collection[int], stage: str) -> None:
    if len(clients) < self._threshold:
      raise InsufficientSharesError(f'client {self.id}: {len(clients)} clients at {stage}, '
                                    f'threshold {self._threshold}')

  def _share_key(self, peer: int) -> AESGCM:
    peer_c_public = x25519.X25519PublicKey.from_public_bytes(self._peer_keys[peer][0])
    return AESGCM(_kdf(self._c_key.exchange(peer_c_public), b'share encryption'))

  # The rules (module docstring); each raises the ProtocolViolation naming it.

  def _check_key_broadcast(self, keys: Mapping[int, tuple[bytes, bytes, bytes]]) -> None:
    if keys.get(self.id, (None, None))[:2] != self._own_keys():
      raise KeyBroadcastViolation(self._name, 'its own keys are missing or changed')
    public_keys = [key for c, s, _ in keys.values() for key in (c, s)]
    if len(set(public_keys)) != len(public_keys):
      raise KeyBroadcastViolation(self._name, 'two advertised public keys are equal')
    if self.active:
      for v, (c, s, signature) in keys.items():
        if not self._pki.verify(v, signature, _keys_signed_message(v, c, s)):
          raise SignatureViolation(self._name, f"client {v}'s keys are not signed by its PKI key")

  def _check_threshold(self, num_advertised: int) -> None:
    if 2 * self._threshold <= num_advertised:
      raise ThresholdViolation(self._name, f't={self._threshold} is not a strict majority of the '
                               f'{num_advertised} advertised clients')

  def _check_survivors(self, u3: Collection[int], stage: str) -> None:
    if self.id not in u3:
      raise SelfExclusionViolation(self._name, f'the survivor list at {stage} leaves it out')
    if not set(u3) <= set(self._u2):
      raise MalformedMessageViolation(self._name, f'the survivor list at {stage} names clients '
                                      f'{sorted(set(u3) - set(self._u2))} that sent no shares')
    self._require(u3, stage)

  def _check_reveal(self, kinds: Mapping[int, str]) -> None:
    for v, kind in kinds.items():
      if self._revealed.get(v, kind) != kind:
        raise ShareRevealViolation(self._name, f'it revealed the {self._revealed[v]} share of '
                                   f'client {v} already')

  def _record_reveal(self, kinds: Mapping[int, str]) -> None:
    self._check_reveal(kinds)
    self._revealed.update(kinds)

  # The stages.

  @_stage('advertise_keys')
  def advertise_keys(self) -> bytes:
    """Round 0: id ‖ c^PK ‖ s^PK (active: ‖ signature by d_u)."""
    c_public, s_public = self._own_keys()
    message = _id(self.id) + c_public + s_public
    if self.active:
      message += self._signing_key.sign(_keys_signed_message(self.id, c_public, s_public))
    return message

  @_stage('share_keys')
  def share_keys(self, keys_broadcast: bytes) -> list[bytes]:
    """Round 1: for each peer, from ‖ to ‖ nonce ‖ AES-GCM(from ‖ to ‖ s^SK share ‖ b share).

    Raises:
      KeyBroadcastViolation, SignatureViolation: For a broadcast the rules refuse.
      ThresholdViolation: If 2t <= the number of advertised clients.
      InsufficientSharesError: If fewer than t clients are advertised.
    """
    keys = _parse_keys(keys_broadcast, self.active, self._name)
    self._check_key_broadcast(keys)
    self._require(keys, 'ShareKeys')
    self._check_threshold(len(keys))
    self._peer_keys = keys
    self._keys_digest = _keys_digest(keys)
    xs = [v + 1 for v in keys]
    s_shares = shamir_split(int.from_bytes(_private_bytes(self._s_key), 'little'), xs,
                            self._threshold, self._randbytes)
    b_shares = shamir_split(int.from_bytes(self._b_seed, 'little'), xs, self._threshold,
                            self._randbytes)
    self._held_shares[self.id] = (s_shares[self.id + 1], b_shares[self.id + 1])
    messages = []
    for v in keys:
      if v == self.id:
        continue
      header = _id(self.id) + _id(v)
      nonce = self._randbytes(_NONCE_BYTES)
      plaintext = (header + s_shares[v + 1].to_bytes(FIELD_BYTES, 'little')
                   + b_shares[v + 1].to_bytes(FIELD_BYTES, 'little'))
      messages.append(header + nonce + self._share_key(v).encrypt(nonce, plaintext, header))
    return messages

  @_stage('masked_input')
  def masked_input(self, x: np.ndarray, shares_for_me: bytes) -> bytes:
    """Round 2: id ‖ pack(y), y = x + PRG(b) ± pairwise masks with U2 (mod 2^k).

    Raises:
      MalformedMessageViolation: For a share message that is not from an advertised peer to this
        client, comes twice from one peer, or fails authentication.
      InsufficientSharesError: If fewer than t clients (itself included) sent shares.
    """
    x = np.asarray(x)
    if x.ndim != 1 or not np.all((x >= 0) & (x < 2**self._bits)):
      raise ValueError(f'client {self.id}: input must be a vector of integers in [0, 2^k)')
    for message in _chunks(shares_for_me, SHARES_MESSAGE_BYTES, self._name, 'the share inbox'):
      header, nonce = message[:2 * ID_BYTES], message[2 * ID_BYTES:2 * ID_BYTES + _NONCE_BYTES]
      sender = _read_id(header)
      if sender == self.id or sender not in self._peer_keys or sender in self._held_shares:
        raise MalformedMessageViolation(self._name, f'a share message claims to be from client '
                                        f'{sender}, not a peer that has not sent one yet')
      try:
        plaintext = self._share_key(sender).decrypt(
            nonce, message[2 * ID_BYTES + _NONCE_BYTES:], header)
      except crypto_exceptions.InvalidTag:
        raise MalformedMessageViolation(
            self._name, f'the share message from client {sender} fails authentication') from None
      if plaintext[:2 * ID_BYTES] != _id(sender) + _id(self.id):
        raise MalformedMessageViolation(self._name,
                                        f'the share message from client {sender} is misaddressed')
      shares = plaintext[2 * ID_BYTES:]
      self._held_shares[sender] = (int.from_bytes(shares[:FIELD_BYTES], 'little'),
                                   int.from_bytes(shares[FIELD_BYTES:], 'little'))
    self._u2 = sorted(self._held_shares)
    self._require(self._u2, 'MaskedInputCollection')
    modulus = np.uint64(2**self._bits)
    y = (x.astype(np.uint64) + prg(self._b_seed, len(x), self._bits)) % modulus
    for v in self._u2:
      if v == self.id:
        continue
      mask = _pairwise_mask(self._s_key, self._peer_keys[v][1], len(x), self._bits)
      y = (y + mask) % modulus if self.id < v else (y + modulus - mask) % modulus
    return _id(self.id) + pack(y, self._bits)

  @_stage('consistency_check')
  def consistency_check(self, u3_broadcast: bytes) -> bytes:
    """Round 3 (active only): id ‖ signature of (H(key broadcast), U3).

    Raises:
      SelfExclusionViolation: If U3 leaves this client out.
      MalformedMessageViolation: If U3 is not a subset of U2.
      InsufficientSharesError: If |U3| < t.
    """
    u3 = _parse_ids(u3_broadcast, self._name, 'the survivor list')
    self._check_survivors(u3, 'ConsistencyCheck')
    self._u3 = sorted(u3)
    return _id(self.id) + self._signing_key.sign(
        _survivors_signed_message(self._keys_digest, self._u3))

  @_stage('unmask')
  def unmask(self, request: bytes) -> bytes:
    """Round 4: id ‖ (v ‖ share) for v ∈ U2: b_v's share if v ∈ U3, else s_v^SK's share.

    Args:
      request: The U3 broadcast; with active security, the consistency-check broadcast
        (v ‖ signature) for v ∈ U4, and U3 is the list this client signed.

    Raises:
      SelfExclusionViolation: If U3 leaves this client out.
      ConsistencyViolation: Active: if a signature is not on this client's (keys, U3).
      ShareRevealViolation: If it would reveal the other kind of share of a peer (backs up the
        stage rule).
      InsufficientSharesError: If |U3| (active: |U4|) < t.
    """
    if self.active:
      u3 = self._u3
      entries = _chunks(request, CONSISTENCY_MESSAGE_BYTES, self._name,
                        'the consistency broadcast')
      u4 = _parse_ids(b''.join(e[:ID_BYTES] for e in entries), self._name,
                      'the consistency broadcast')
      signed = _survivors_signed_message(self._keys_digest, u3)
      for v, entry in zip(u4, entries):
        if v not in u3 or not self._pki.verify(v, entry[ID_BYTES:], signed):
          raise ConsistencyViolation(self._name, f'client {v} did not sign the survivor list '
                                     'this client signed')
      self._require(u4, 'Unmasking')
    else:
      u3 = _parse_ids(request, self._name, 'the survivor list')
      self._check_survivors(u3, 'Unmasking')
    u3 = set(u3)
    kinds = {v: 'b' if v in u3 else 's' for v in self._u2}
    self._record_reveal(kinds)
    response = _id(self.id)
    for v in self._u2:
      s_share, b_share = self._held_shares[v]
      response += _id(v) + (b_share if kinds[v] == 'b' else s_share).to_bytes(FIELD_BYTES,
                                                                               'little')
    return response


class SecAggServer(_Party):
  """The server's side: routes messages and unmasks the sum. It only ever holds public keys,
  ciphertexts, masked vectors and the shares clients reveal in round 4.

  It refuses (`UnexpectedInputViolation`) any message that would corrupt the sum, and unmasks
  exactly the survivor list it broadcast.
  """

  def __init__(self, vector_length: int, modulus_bits: int, threshold: int,
               active: bool = False):
    if not _is_int(threshold) or threshold < 2:
      raise ValueError(f'threshold must be an integer >= 2; got {threshold!r}')
    super().__init__('server')
    self.active = active
    self._stages = (('collect_keys', 'route_shares', 'collect_masked_inputs',
                     'collect_consistency', 'unmask') if active else
                    ('collect_keys', 'route_shares', 'collect_masked_inputs', 'unmask'))
    self._length = vector_length
    self._bits = modulus_bits
    self._threshold = threshold
    self._keys: dict[int, tuple[bytes, bytes, bytes]] = {}
    self._u2: list[int] = []
    self._u3: list[int] = []
    self._u4: list[int] = []
    self._masked_inputs: dict[int, np.ndarray] = {}

  @property
  def masked_inputs(self) -> Mapping[int, np.ndarray]:
    """The server's whole view of the inputs (read-only)."""
    return types.MappingProxyType(self._masked_inputs)

  def _require(self, clients: Collection[int], stage: str) -> None:
    if len(clients) < self._threshold:
      raise InsufficientSharesError(f'server: {len(clients)} clients at {stage}, threshold '
                                    f'{self._threshold}; aborting')

  def _refuse(self, detail: str) -> None:
    raise UnexpectedInputViolation(self._name, detail)

  def _enter_stage(self, stage: str) -> None:
    if stage == 'collect_masked_inputs' and self._u3:
      self._refuse('a masked input arrived after the survivor list was broadcast')
    super()._enter_stage(stage)

  @_stage('collect_keys')
  def collect_keys(self, messages: list[bytes]) -> bytes:
    """Round 0: returns the broadcast of U1's public keys (in id order)."""
    size = KEYS_MESSAGE_BYTES + (SIGNATURE_BYTES if self.active else 0)
    for message in messages:
      if len(message) != size:
        self._refuse(f'a key message of {len(message)} bytes, not {size}')
      u = _read_id(message)
      if u in self._keys:
        self._refuse(f'client {u} advertised keys twice')
      self._keys[u] = (message[ID_BYTES:ID_BYTES + KEY_BYTES],
                       message[ID_BYTES + KEY_BYTES:KEYS_MESSAGE_BYTES],
                       message[KEYS_MESSAGE_BYTES:])
    self._require(self._keys, 'AdvertiseKeys')
    return b''.join(_id(u) + b''.join(self._keys[u]) for u in sorted(self._keys))

  @_stage('route_shares')
  def route_shares(self, messages_by_sender: Mapping[int, list[bytes]]) -> dict[int, bytes]:
    """Round 1: the ciphertexts addressed to each client of U2 (the clients that sent shares)."""
    unknown = set(messages_by_sender) - set(self._keys)
    if unknown:
      self._refuse(f'shares from clients {sorted(unknown)} that advertised no keys')
    self._u2 = sorted(messages_by_sender)
    self._require(self._u2, 'ShareKeys')
    inbox = {v: b'' for v in self._u2}
    for sender, messages in messages_by_sender.items():
      recipients = [_read_id(m, ID_BYTES) for m in messages]
      if (any(len(m) != SHARES_MESSAGE_BYTES or _read_id(m) != sender for m in messages)
          or len(set(recipients)) != len(recipients) or not set(recipients) <= set(self._keys)):
        self._refuse(f'client {sender} sent share messages that are malformed, repeated, not '
                     'from it or to unknown clients')
      for recipient, message in zip(recipients, messages):
        if recipient in inbox:
          inbox[recipient] += message
    return inbox

  @_stage('collect_masked_inputs')
  def collect_masked_inputs(self, messages: list[bytes]) -> bytes:
    """Round 2: stores the masked vectors; returns the U3 broadcast. The stage then closes."""
    size = ID_BYTES + packed_bytes(self._length, self._bits)
    inputs = {}
    for message in messages:
      u = _read_id(message)
      if u not in self._u2:
        self._refuse(f'a masked input from client {u}, which sent no shares')
      if u in inputs:
        self._refuse(f'client {u} sent two masked inputs')
      if len(message) != size:
        self._refuse(f'the masked input of client {u} has {len(message)} bytes, not {size}')
      inputs[u] = unpack(message[ID_BYTES:], self._bits, self._length)
    self._require(inputs, 'MaskedInputCollection')
    self._masked_inputs = inputs
    self._u3 = sorted(inputs)
    return _ids_bytes(self._u3)

  @_stage('collect_consistency')
  def collect_consistency(self, messages: list[bytes]) -> bytes:
    """Round 3 (active only): the broadcast of (v ‖ signature) for v ∈ U4."""
    signatures = {}
    for message in messages:
      v = _read_id(message)
      if len(message) != CONSISTENCY_MESSAGE_BYTES or v not in self._u3 or v in signatures:
        self._refuse(f'a consistency message from client {v} that is malformed, repeated or not '
                     'from a survivor')
      signatures[v] = message
    self._require(signatures, 'ConsistencyCheck')
    self._u4 = sorted(signatures)
    return b''.join(signatures[v] for v in self._u4)

  @_stage('unmask')
  def unmask(self, responses: list[bytes]) -> np.ndarray:
    """Round 4: Σ_{u∈U3} x_u mod 2^k from the masked vectors and the revealed shares."""
    askable = set(self._u4 if self.active else self._u3)
    size = ID_BYTES + REVEALED_SHARE_BYTES * len(self._u2)
    shares: dict[int, dict[int, int]] = {v: {} for v in self._u2}
    responders = set()
    for response in responses:
      responder = _read_id(response)
      if responder not in askable or responder in responders:
        self._refuse(f'an unmasking response from client {responder}, not asked or repeated')
      owners = [_read_id(response, start)
                for start in range(ID_BYTES, len(response), REVEALED_SHARE_BYTES)]
      if len(response) != size or sorted(owners) != self._u2:
        self._refuse(f'the unmasking response of client {responder} does not hold one share '
                     'per client of U2')
      responders.add(responder)
      for owner, start in zip(owners, range(ID_BYTES, len(response), REVEALED_SHARE_BYTES)):
        shares[owner][responder + 1] = int.from_bytes(
            response[start + ID_BYTES:start + REVEALED_SHARE_BYTES], 'little')
    self._require(responders, 'Unmasking')
    modulus = np.uint64(2**self._bits)
    total = np.zeros(self._length, np.uint64)
    for u in self._u3:
      b_seed = _secret_bytes(shamir_reconstruct(shares[u], self._threshold))
      total = (total + self._masked_inputs[u] + modulus - prg(b_seed, self._length, self._bits)
               ) % modulus
    for v in sorted(set(self._u2) - set(self._u3)):
      s_key = x25519.X25519PrivateKey.from_private_bytes(
          _secret_bytes(shamir_reconstruct(shares[v], self._threshold)))
      for u in self._u3:
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
  """⌊n/2⌋ + 1, the smallest strict majority: the least t the clients accept (2t > n)."""
  return num_clients // 2 + 1


def check_threshold(threshold: int, num_clients: int) -> None:
  """Raises a one-line ValueError unless t is an integer with n/2 < t <= n."""
  if not _is_int(threshold) or not (2 * threshold > num_clients and 2 <= threshold <= num_clients):
    raise ValueError(f'threshold must be an integer in [{max(2, default_threshold(num_clients))}, '
                     f'{num_clients}]: a strict majority of the {num_clients} clients (2t > n, so '
                     f'no two disjoint sets of t clients exist) and at least 2; got {threshold}')


def run_protocol(inputs: Mapping[int, np.ndarray], modulus_bits: int = 32,
                 threshold: Optional[int] = None, drop_after_keys: Collection[int] = (),
                 drop_after_sharing: Collection[int] = (),
                 drop_after_masking: Collection[int] = (),
                 seed: Optional[int] = None, active: bool = False) -> SecAggResult:
  """Runs one secure aggregation of `inputs` {client id: vector in Z_{2^k}} with dropouts.

  Args:
    inputs: Each client's encoded vector (integers in [0, 2^k), all of one length).
    modulus_bits: k.
    threshold: t, shares needed to rebuild a secret, with n/2 < t <= n;
      `default_threshold(n)` if None.
    drop_after_keys: Clients that vanish after AdvertiseKeys (in U1 only).
    drop_after_sharing: Clients that vanish after ShareKeys (U2 \\ U3): their masks are
      recovered and their inputs are not in the sum.
    drop_after_masking: Clients whose masked input arrives but who vanish before Unmasking
      (U3 \\ U5; active: before the consistency check): their inputs are in the sum.
    seed: For reproducible (insecure) keys; None uses os.urandom.
    active: Security against an active server: a simulated PKI of Ed25519 keys, signed keys and
      the consistency-check round.

  Raises:
    ValueError: For bad arguments, e.g. a threshold that is not a strict majority.
    InsufficientSharesError: If fewer than t clients remain at any round.
    ProtocolViolation: If a party refuses a message (never with this honest server).
  """
  ids = sorted(inputs)
  if len(ids) < 2:
    raise ValueError(f'secure aggregation needs at least 2 clients; got {len(ids)}')
  threshold = default_threshold(len(ids)) if threshold is None else threshold
  check_threshold(threshold, len(ids))
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

  def send(clients_, message):
    for u in clients_:
      down[u] += len(message)

  pki = SimulatedPKI() if active else None
  clients = {}
  for u in ids:  # enrolling (certificate issuance) happens before the round: not timed
    signing_key = pki.enroll(u, randbytes) if active else None
    clients[u] = SecAggClient(u, modulus_bits, threshold, randbytes, signing_key, pki)
  server = SecAggServer(length, modulus_bits, threshold, active)
  keys = on_server(server.collect_keys, [on_client(u, clients[u].advertise_keys) for u in ids])
  send(ids, keys)
  u2 = [u for u in ids if u not in drop_after_keys]
  inbox = on_server(server.route_shares,
                    {u: on_client(u, clients[u].share_keys, keys) for u in u2})
  for u in u2:
    down[u] += len(inbox[u])
  u3 = [u for u in u2 if u not in drop_after_sharing]
  u3_broadcast = on_server(server.collect_masked_inputs, [
      on_client(u, clients[u].masked_input, inputs[u], inbox[u]) for u in u3])
  send(u3, u3_broadcast)
  u5 = [u for u in u3 if u not in drop_after_masking]
  request = u3_broadcast
  if active:
    request = on_server(server.collect_consistency, [
        on_client(u, clients[u].consistency_check, u3_broadcast) for u in u5])
    send(u5, request)
  total = on_server(server.unmask, [on_client(u, clients[u].unmask, request) for u in u5])
  return SecAggResult(total, tuple(u3), dict(server.masked_inputs),
                      ProtocolCost(up, down, client_seconds, server_seconds))


def expected_bytes(n1, n2, n3, n5, vector_length: int, modulus_bits: int, active: bool = False):
  """(total upload, total download) bytes of one run, in closed form.

  n1 ≥ n2 ≥ n3 ≥ n5 are the numbers of clients that advertised keys, shared them, sent masked
  input and answered the unmasking round (active: and signed the survivor list, U4 = U5).
  """
  keys = KEYS_MESSAGE_BYTES + (SIGNATURE_BYTES if active else 0)
  masked_input = ID_BYTES + packed_bytes(vector_length, modulus_bits)
  upload = (keys * n1 + SHARES_MESSAGE_BYTES * (n1 - 1) * n2
            + masked_input * n3 + (ID_BYTES + REVEALED_SHARE_BYTES * n2) * n5)
  download = keys * n1 * n1 + SHARES_MESSAGE_BYTES * (n2 - 1) * n2 + ID_BYTES * n3 * n3
  if active:
    upload += CONSISTENCY_MESSAGE_BYTES * n5
    download += CONSISTENCY_MESSAGE_BYTES * n5 * n5
  return upload, download
