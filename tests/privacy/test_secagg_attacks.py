"""A server that deviates from the SecAgg protocol, one test per attack (issue 15).

Each attack is a real adversarial server: it drives the clients through secagg's functions,
keeps every byte it sees and tries to recover client 0's input x_0. Every test first runs the
attack against `_RuleFreeClient`, the client without the rules (as secagg was before issue 15),
and checks that it recovers x_0 exactly, so the attack is real and the test can fail; then it runs
the same attack against `secagg.SecAggClient` and checks that the round fails with the exception
naming the rule and that the server recovers nothing.
"""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tff_lab.privacy import secagg

BITS = 32
LENGTH = 64
VICTIM = 0


class _RuleFreeClient(secagg.SecAggClient):
  """The client before issue 15: no stage order, key, threshold, self-exclusion or reveal rules
  (it kept the check that U3 ⊆ U2 and the count of at least t clients)."""

  def _enter_stage(self, stage):
    pass

  def _check_key_broadcast(self, keys):
    pass

  def _check_threshold(self, num_advertised):
    pass

  def _check_survivors(self, u3, stage):
    assert set(u3) <= set(self._u2)
    self._require(u3, stage)

  def _check_reveal(self, kinds):
    pass


def _setup(client_class, n, t, seed=0, active=False):
  """(clients {u: client}, inputs {u: x_u}, pki or None) with reproducible keys."""
  randbytes = secagg.make_randbytes(seed)
  pki = secagg.SimulatedPKI() if active else None
  clients = {u: client_class(u, BITS, t, randbytes,
                             pki.enroll(u, randbytes) if active else None, pki)
             for u in range(n)}
  rng = np.random.default_rng(seed)
  inputs = {u: rng.integers(0, 2**BITS, LENGTH, dtype=np.uint64) for u in range(n)}
  return clients, inputs, pki


def _keys_broadcast(clients):
  return b''.join(clients[u].advertise_keys() for u in sorted(clients))


def _route(messages_by_sender):
  inbox = {}
  for messages in messages_by_sender.values():
    for m in messages:
      recipient = secagg._read_id(m, secagg.ID_BYTES)
      inbox[recipient] = inbox.get(recipient, b'') + m
  return inbox


def _until_masked(clients, inputs):
  """The server follows the protocol up to MaskedInputCollection: (keys broadcast, {u: y_u})."""
  broadcast = _keys_broadcast(clients)
  inbox = _route({u: c.share_keys(broadcast) for u, c in clients.items()})
  masked = {u: c.masked_input(inputs[u], inbox[u]) for u, c in clients.items()}
  return broadcast, {u: secagg.unpack(m[secagg.ID_BYTES:], BITS, LENGTH)
                     for u, m in masked.items()}


def _revealed(response):
  """{owner: share} from an unmasking response."""
  return {secagg._read_id(response, i): int.from_bytes(
      response[i + secagg.ID_BYTES:i + secagg.REVEALED_SHARE_BYTES], 'little')
          for i in range(secagg.ID_BYTES, len(response), secagg.REVEALED_SHARE_BYTES)}


def _ask(client, survivors):
  """The victim's share `client` reveals when told `survivors` survived."""
  return _revealed(client.unmask(secagg._ids_bytes(survivors)))[VICTIM]


def _recover_input(y, s_public_keys, b_shares, s_shares, t):
  """x_0 from y_0, the peers' s^PK, and t shares each of b_0 and s_0^SK: the attacker's goal.

  Raises:
    secagg.InsufficientSharesError: With fewer than t shares of either: nothing is recovered.
  """
  b_seed = secagg.shamir_reconstruct(b_shares, t).to_bytes(secagg.KEY_BYTES, 'little')
  s_key = x25519.X25519PrivateKey.from_private_bytes(
      secagg.shamir_reconstruct(s_shares, t).to_bytes(secagg.KEY_BYTES, 'little'))
  modulus = np.uint64(2**BITS)
  x = (y + modulus - secagg.prg(b_seed, LENGTH, BITS)) % modulus
  for v, s_public in s_public_keys.items():
    if v != VICTIM:
      mask = secagg._pairwise_mask(s_key, s_public, LENGTH, BITS)
      x = (x + modulus - mask) % modulus if VICTIM < v else (x + mask) % modulus
  return x


def _s_public_keys(broadcast):
  return {v: keys[1] for v, keys in secagg._parse_keys(broadcast, False, 'attacker').items()}


def _assert_one_line_naming(error, cls):
  assert isinstance(error, cls)
  assert '\n' not in str(error) and cls.rule in str(error)


# ------------------------------------------------------------------------------------------------
# 1. Repeated unmasking.


def _repeated_unmasking(client_class):
  """Asks every client to unmask twice: "everyone survived" (b_0's shares), then "0 dropped"
  (s_0^SK's shares); returns x_0 as the server rebuilds it."""
  n, t = 5, 3
  clients, inputs, _ = _setup(client_class, n, t)
  broadcast, masked = _until_masked(clients, inputs)
  b_shares = {u + 1: _ask(c, range(n)) for u, c in clients.items()}
  s_shares = {u + 1: _ask(c, [v for v in range(n) if v != VICTIM])
              for u, c in clients.items() if u != VICTIM}
  return _recover_input(masked[VICTIM], _s_public_keys(broadcast), b_shares, s_shares, t)


def test_repeated_unmasking_recovers_nothing():
  clients, inputs, _ = _setup(_RuleFreeClient, 5, 3)
  np.testing.assert_array_equal(_repeated_unmasking(_RuleFreeClient), inputs[VICTIM])

  with pytest.raises(secagg.StageOrderViolation) as error:
    _repeated_unmasking(secagg.SecAggClient)
  _assert_one_line_naming(error.value, secagg.StageOrderViolation)
  assert 'unmask requested again' in str(error.value)
  clients, inputs, _ = _setup(secagg.SecAggClient, 5, 3)
  broadcast, masked = _until_masked(clients, inputs)
  b_shares = {u + 1: _ask(c, range(5)) for u, c in clients.items()}
  for c in clients.values():  # three more requests: none answered
    for _ in range(3):
      with pytest.raises(secagg.StageOrderViolation):
        c.unmask(secagg._ids_bytes(range(1, 5)))
  with pytest.raises(secagg.InsufficientSharesError):  # no share of s_0^SK: x_0 stays hidden
    _recover_input(masked[VICTIM], _s_public_keys(broadcast), b_shares, {}, 3)


def test_the_ledger_alone_refuses_the_other_kind_of_share():
  class NoStageOrder(secagg.SecAggClient):

    def _enter_stage(self, stage):
      pass

  clients, inputs, _ = _setup(NoStageOrder, 3, 2)
  _until_masked(clients, inputs)
  _ask(clients[1], range(3))
  with pytest.raises(secagg.ShareRevealViolation) as error:
    _ask(clients[1], [1, 2])
  _assert_one_line_naming(error.value, secagg.ShareRevealViolation)


# ------------------------------------------------------------------------------------------------
# 2. Self-exclusion: asking a client to reveal shares as if it had dropped.


def test_self_exclusion_request_is_refused():
  n, t = 3, 2
  clients, inputs, _ = _setup(_RuleFreeClient, n, t)
  _until_masked(clients, inputs)
  s_shares = {1: _ask(clients[0], [1, 2]),  # the victim's own s-share, which it never needs
              3: _ask(clients[2], [1, 2])}
  s_key = secagg.shamir_reconstruct(s_shares, t).to_bytes(secagg.KEY_BYTES, 'little')
  assert s_key == secagg._private_bytes(clients[0]._s_key)  # the victim's mask key leaked

  clients, inputs, _ = _setup(secagg.SecAggClient, n, t)
  _until_masked(clients, inputs)
  with pytest.raises(secagg.SelfExclusionViolation) as error:
    clients[0].unmask(secagg._ids_bytes([1, 2]))
  _assert_one_line_naming(error.value, secagg.SelfExclusionViolation)
  with pytest.raises(secagg.StageOrderViolation, match='aborted'):  # and it answers nothing more
    clients[0].unmask(secagg._ids_bytes([0, 1, 2]))


# ------------------------------------------------------------------------------------------------
# 3. A minority threshold with different survivor lists for different clients.


def _split_lists(clients, inputs, t, active=False):
  """Clients 0, 1 are told everyone survived (b_0's shares); 2, 3 that 0 dropped (s_0's)."""
  broadcast, masked = _until_masked(clients, inputs)
  lists = {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [1, 2, 3], 3: [1, 2, 3]}
  b_shares, s_shares = {}, {}
  if active:
    signatures = {u: c.consistency_check(secagg._ids_bytes(lists[u])) for u, c in clients.items()}
    for u, c in clients.items():  # each client gets every signature
      c.unmask(b''.join(signatures.values()))
  for u, c in clients.items():
    (b_shares if VICTIM in lists[u] else s_shares)[u + 1] = _ask(c, lists[u])
  return _recover_input(masked[VICTIM], _s_public_keys(broadcast), b_shares, s_shares, t)


def test_minority_threshold_with_split_survivor_lists_recovers_nothing():
  clients, inputs, _ = _setup(_RuleFreeClient, 4, 2)
  np.testing.assert_array_equal(_split_lists(clients, inputs, 2), inputs[VICTIM])

  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 2)  # t=2 of n=4: not a strict majority
  broadcast = _keys_broadcast(clients)
  for c in clients.values():
    with pytest.raises(secagg.ThresholdViolation) as error:
      c.share_keys(broadcast)  # refused before any share leaves the client
    _assert_one_line_naming(error.value, secagg.ThresholdViolation)
    assert 't=2 is not a strict majority of the 4 advertised clients' in str(error.value)

  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 3)  # a majority: two lists cannot both win
  with pytest.raises(secagg.InsufficientSharesError, match='2 shares, need 3'):
    _split_lists(clients, inputs, 3)

  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 3, active=True)
  with pytest.raises(secagg.ConsistencyViolation) as error:  # detected before any share is out
    _split_lists(clients, inputs, 3, active=True)
  _assert_one_line_naming(error.value, secagg.ConsistencyViolation)


def test_active_clients_refuse_fewer_than_t_matching_signatures():
  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 3, active=True)
  _until_masked(clients, inputs)
  signature = clients[0].consistency_check(secagg._ids_bytes(range(4)))
  with pytest.raises(secagg.InsufficientSharesError):  # only its own signature
    clients[0].unmask(signature)


# ------------------------------------------------------------------------------------------------
# 4. Key substitution: the server puts its own c-keys in the victim's key broadcast.


def _substitute_keys(clients, inputs, t, fake_keys, own_key=None):
  """Runs the victim (client 0) on a broadcast whose peer c-keys are `fake_keys` {v: key}.

  The server decrypts every share the victim sends, forges the victim's inbox under the fake
  keys, and recovers x_0 from its masked input. `own_key` also replaces the victim's own c-key.
  """
  victim = clients[VICTIM]
  broadcast = _keys_broadcast(clients)
  entry = secagg.KEYS_MESSAGE_BYTES + (secagg.SIGNATURE_BYTES if victim.active else 0)
  entries = [broadcast[i:i + entry] for i in range(0, len(broadcast), entry)]
  for v, key in list(fake_keys.items()) + ([(VICTIM, own_key)] if own_key else []):
    entries[v] = (entries[v][:secagg.ID_BYTES] + secagg._public_bytes(key)
                  + entries[v][secagg.ID_BYTES + secagg.KEY_BYTES:])
  forged = b''.join(entries)
  victim_c_public = x25519.X25519PublicKey.from_public_bytes(victim._own_keys()[0])
  s_shares, b_shares, inbox = {}, {}, b''
  for message in victim.share_keys(forged):
    v = secagg._read_id(message, secagg.ID_BYTES)
    aead = AESGCM(secagg._kdf(fake_keys[v].exchange(victim_c_public), b'share encryption'))
    header = message[:2 * secagg.ID_BYTES]
    nonce = message[2 * secagg.ID_BYTES:2 * secagg.ID_BYTES + 12]
    plaintext = aead.decrypt(nonce, message[2 * secagg.ID_BYTES + 12:], header)
    shares = plaintext[2 * secagg.ID_BYTES:]
    s_shares[v + 1] = int.from_bytes(shares[:secagg.FIELD_BYTES], 'little')
    b_shares[v + 1] = int.from_bytes(shares[secagg.FIELD_BYTES:], 'little')
    reply_header = secagg._id(v) + secagg._id(VICTIM)  # a forged share message "from v"
    reply = reply_header + bytes(2 * secagg.FIELD_BYTES)
    inbox += reply_header + nonce + aead.encrypt(nonce, reply, reply_header)
  y = secagg.unpack(victim.masked_input(inputs[VICTIM], inbox)[secagg.ID_BYTES:], BITS, LENGTH)
  peers_s = {v: keys[1] for v, keys in secagg._parse_keys(broadcast, victim.active,
                                                          'attacker').items()}
  return _recover_input(y, peers_s, b_shares, s_shares, t)


def _fake(seed):
  return x25519.X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def test_key_substitution_with_one_key_is_refused():
  one = _fake(7)
  clients, inputs, _ = _setup(_RuleFreeClient, 4, 3)
  recovered = _substitute_keys(clients, inputs, 3, {v: one for v in (1, 2, 3)})
  np.testing.assert_array_equal(recovered, inputs[VICTIM])

  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 3)
  with pytest.raises(secagg.KeyBroadcastViolation, match='two advertised public keys are equal'):
    _substitute_keys(clients, inputs, 3, {v: one for v in (1, 2, 3)})
  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 3)
  with pytest.raises(secagg.KeyBroadcastViolation, match='own keys are missing or changed') as e:
    _substitute_keys(clients, inputs, 3, {v: _fake(10 + v) for v in (1, 2, 3)}, own_key=_fake(9))
  _assert_one_line_naming(e.value, secagg.KeyBroadcastViolation)


def test_key_substitution_with_distinct_keys_needs_active_security():
  fakes = {v: _fake(10 + v) for v in (1, 2, 3)}
  # Honest-but-curious clients cannot tell a fresh key from a real one: the documented limit.
  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 3)
  np.testing.assert_array_equal(_substitute_keys(clients, inputs, 3, fakes), inputs[VICTIM])

  clients, inputs, _ = _setup(secagg.SecAggClient, 4, 3, active=True)
  with pytest.raises(secagg.SignatureViolation) as error:  # nothing was shared
    _substitute_keys(clients, inputs, 3, fakes)
  _assert_one_line_naming(error.value, secagg.SignatureViolation)
  assert "client 1's keys are not signed" in str(error.value)


def test_active_clients_refuse_invented_clients():
  clients, inputs, pki = _setup(secagg.SecAggClient, 3, 2, active=True)
  broadcast = _keys_broadcast(clients)
  sybil = b''.join((secagg._id(7), secagg._public_bytes(_fake(1)), secagg._public_bytes(_fake(2)),
                    bytes(secagg.SIGNATURE_BYTES)))  # the server cannot sign for client 7
  with pytest.raises(secagg.SignatureViolation, match='client 7'):
    clients[0].share_keys(broadcast + sybil)


# ------------------------------------------------------------------------------------------------
# 5. Late, unknown and short inputs to the server object.


def _server_round_to_masked(drop=()):
  """An honest server object and clients, run to the masked inputs; client(s) `drop` sent none."""
  n, t = 5, 3
  clients, inputs, _ = _setup(secagg.SecAggClient, n, t)
  server = secagg.SecAggServer(LENGTH, BITS, t)
  broadcast = server.collect_keys([clients[u].advertise_keys() for u in range(n)])
  inbox = server.route_shares({u: clients[u].share_keys(broadcast) for u in range(n)})
  masked = {u: clients[u].masked_input(inputs[u], inbox[u]) for u in range(n)}
  return server, clients, inputs, masked


def _plain_sum(inputs, ids):
  return sum(inputs[u].astype(object) for u in ids) % 2**BITS


def test_a_late_input_is_refused_and_the_sum_stays_exact():
  server, clients, inputs, masked = _server_round_to_masked()
  u3 = server.collect_masked_inputs([masked[u] for u in range(4)])  # client 4 is late
  with pytest.raises(secagg.UnexpectedInputViolation, match='after the survivor list') as error:
    server.collect_masked_inputs([masked[4]])
  _assert_one_line_naming(error.value, secagg.UnexpectedInputViolation)
  with pytest.raises(TypeError):
    server.masked_inputs[4] = masked[4]  # the server's view is read-only
  total = server.unmask([clients[u].unmask(u3) for u in range(4)])
  np.testing.assert_array_equal(total, _plain_sum(inputs, range(4)))


@pytest.mark.parametrize('tamper, match', [
    (lambda m: secagg._id(99) + m[secagg.ID_BYTES:], 'client 99, which sent no shares'),
    (lambda m: m[:-4], 'has 256 bytes, not 260'),
    (lambda m: m + bytes(4), 'has 264 bytes, not 260'),
], ids=['unknown_id', 'short', 'long'])
def test_unknown_and_wrong_length_inputs_are_refused(tamper, match):
  server, _, _, masked = _server_round_to_masked()
  with pytest.raises(secagg.UnexpectedInputViolation, match=match):
    server.collect_masked_inputs([masked[u] for u in range(4)] + [tamper(masked[4])])
  with pytest.raises(secagg.StageOrderViolation):  # no sum after a refusal
    server.unmask([])


def test_the_server_refuses_repeated_and_unasked_unmasking_responses():
  server, clients, _, masked = _server_round_to_masked()
  u3 = server.collect_masked_inputs([masked[u] for u in range(4)])
  responses = [clients[u].unmask(u3) for u in range(3)]
  with pytest.raises(secagg.UnexpectedInputViolation, match='not asked or repeated'):
    server.unmask(responses + responses[:1])
  server, clients, _, masked = _server_round_to_masked()
  u3 = server.collect_masked_inputs([masked[u] for u in range(4)])
  with pytest.raises(secagg.UnexpectedInputViolation, match='client 4, not asked'):
    server.unmask([clients[u].unmask(u3) for u in range(3)]
                  + [secagg._id(4) + bytes(secagg.REVEALED_SHARE_BYTES * 5)])
