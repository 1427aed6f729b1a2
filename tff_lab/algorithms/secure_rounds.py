"""Training rounds whose model updates are summed by the real secure aggregation protocol.

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", ACM CCS 2017 (IACR ePrint 2017/281).

`SecureAggregationRounds.next(state, client_inputs, num_dropped)` is one round of the configured
algorithm (fedavg, fedavg_unweighted, fedprox, fedsgd) in which the server learns the clients'
updates only through the masking protocol of `tff_lab.privacy.secagg` (X25519 key agreement,
AES-CTR pairwise and self masks, Shamir-shared keys, dropout recovery). It takes and returns the
`LearningAlgorithmState` of the TFF learning process built for the same settings without secure
aggregation (`tff_lab.training.loop.build_process`), so `initialize`, checkpoints, resume,
`get_model_weights` and evaluation keep working, and its metrics have the process's layout
(`client_work/train/...`, `aggregator/...`, `finalizer/...`). The aggregator part of the state is
carried over as TFF would change it: the mean, fixed clipping and dp='fixed' keep theirs
constant, except DP's `is_init_state` flag (tested against TFF). A round has three phases:

1. **Clients, in TFF's runtime** (`build_client_phase`): one `tff.federated_computation`
   broadcasts the global model, runs the algorithm's own client work (the `ClientWorkProcess`
   its TFF process composes, `registry.create_client_work`), and in client-placed TensorFlow
   clips each update (a fixed `clip_norm`, with TFF's `clipping_factory` arithmetic; or DP's
   clip, with tensorflow-privacy's) and flattens it. It returns the CLIENTS-placed results,
   which TFF 0.87's execution context hands to Python as a list in the order of the client
   inputs (tested), and the training metrics, which the client work sums as in TFF
   (`tff.learning.metrics.sum_then_finalize`; only the model updates are secured, as in TFF's
   `tff.learning.secure_aggregator`), unless `secagg_private_metrics` (below). It runs on the
   local worker and on `--workers`.
2. **The protocol, in Python** (`secure_mean`). Each client encodes its contribution into
   Z_{2^32} (`ContributionCodec`) and `secagg.run_protocol` runs over all the round's clients
   with fresh keys from `os.urandom`. Clients the fault simulation drops ("never report")
   advertise keys and share them, then drop before sending their masked input
   (`drop_after_sharing`): their pairwise masks, left in the survivors' vectors, are removed
   with their key rebuilt from the survivors' Shamir shares, so dropout recovery runs in every
   round with dropouts. With `secagg_active` the protocol runs in its version against an active
   server (signed keys, consistency check). The server object only ever holds public keys,
   ciphertexts, masked vectors and the shares revealed to unmask; it decodes the unmasked sum
   to the mean (and with dp='fixed' adds the Gaussian noise, as TFF's
   `DifferentiallyPrivateFactory` does after its record sum).
3. **Server step**: TFF's own finalizer (`build_apply_optimizer_finalizer` for the server
   optimiser, as the learning process composes it) applies the mean, so this step is the TFF
   process's bit for bit.

Why the protocol runs between two TFF calls and not inside one: TFF's C++ runtime (the
`worker_binary`) executes TensorFlow graphs without Python, so `tf.py_function` fails there ("No
OpKernel was registered to support Op 'PyFunc'"), TensorFlow has no X25519, HKDF or AES ops, an
aggregation process receives only values (no client identity, no client-private input to hold
its keys; keys in server-placed state would be the server's), and TFF's
`federated_secure_modular_sum` is not executable by the native runtime. The parties here are
objects in one process that exchange only serialised bytes; the bytes and compute seconds
reported are those of the actual run, not estimates.

Encoding (`ContributionCodec`), with n = clients_per_round and L = ⌊(2^31 − 1)/n⌋ levels, so the
sum of n encoded vectors cannot overflow (`secagg.FixedPointEncoder`):

* weighted algorithms (fedavg, fedprox, fedsgd): client k sends [w_k·Δ_k | w_k | counts]; the
  mean is Σ w_k·Δ_k / Σ w_k, as TFF's `MeanFactory` (and as `tff.learning.secure_aggregator`,
  which securely sums the weighted values and the weights). w_k·Δ_k is clipped to ±r per
  coordinate and encoded with scale s = L/r; the weight (an example count) is encoded with a
  power-of-two scale, so integer weights up to ≥ 2^20 − 1 (the bound of TFF's secure_aggregator)
  and their sum decode exactly;
* fedavg_unweighted: [Δ_k | counts], mean Σ Δ_k / |survivors|, as `UnweightedMeanFactory`;
* dp='fixed': [clip_C(Δ_k) | counts] with r = C (every coordinate lies in ±C, none is clipped);
  mean (Σ clip_C(Δ_k) + N(0, (zC)² I)) / clients_per_round, TFF's `gaussian_fixed` (DP weighs
  clients equally);
* counts: the client's number of coordinates clipped to ±r and whether its update's norm was
  clipped, integers (scale 1), so the server learns only their totals.

r is `secagg_range`; by default C when C bounds every coordinate exactly (dp='fixed', or
fedavg_unweighted with `clip_norm`), else `DEFAULT_RANGE` = 100 for Δ and
`DEFAULT_WEIGHTED_RANGE` = 10^4 for w·Δ. Rounding to the nearest level costs at most
1/(2s) = r/(2L) per coordinate and client (`ContributionCodec.error_bound`), so per coordinate
the mean is within
  |S|·r/(2L·W)   (weighted; S the survivors, W their weight sum, decoded exactly),
  r/(2L)         (unweighted),         |S|·r/(2L·m)  (DP, before the noise)
of the mean of the clipped float updates. For n = |S| = 10: 2.3e-7 unweighted (r = 100), and
2.3e-4/W weighted (r = 10^4), e.g. 3.2e-7 for a round of W = 720 examples. Coordinates beyond ±r
are clipped: counted in `clipped_coordinates`, with a warning.

Randomness: the masks cancel exactly, so the decoded sum, and with it the whole training
trajectory, does not depend on the keys: runs with different key randomness end with
bit-identical weights (tested), and resume after a checkpoint is exact. DP noise is drawn from
fresh OS entropy each round, as TFF's DP query does (unseeded TensorFlow random ops), so DP runs
are not reproducible either way.

Measurements, under `aggregator/`: `num_clients` (survivors in the sum); with `clip_norm`,
`clipping_norm`, `clipped_count`, `clipped_fraction` (as the stack's clipping layer); with DP,
`dp_noise_stddev` (on the sum); `clipped_coordinates`; `secagg/` with `threshold`,
`clients_started`, `masked_vectors_held` (what the server saw), `recovered_masks` (clients whose
masks were rebuilt from shares), `vector_length`, `client_seconds` (mean compute per client),
`server_seconds`, `protocol_seconds` (wall time of phase 2 in this process: every client's
encoding and protocol work, run one after the other, and the server's),
`extra_upload_bytes_per_client` / `extra_download_bytes_per_client` (what the protocol costs on
top of a plain float32 upload and the model broadcast); and, as every configuration of the stack
reports them, `upload_bytes_per_client` (the protocol's counted wire bytes: keys, encrypted
shares, masked vector, revealed shares) and `download_bytes_per_client` (the float32 model
broadcast plus the protocol's counted bytes), both averaged over the clients that started the
protocol, dropped ones included; `float32_upload_bytes_per_client` (one plain float32 update);
`compression_ratio` (the plain float32 upload of the summed updates over the protocol's total
upload: below 1, the protocol's overhead).

What the server sees, beyond each round's sum of the survivors' encoded contributions:
  * the training metrics (loss, accuracy, example and batch counts, per client) are summed in
    the clear by TFF, as `tff.learning.secure_aggregator` leaves them, unless
    `secagg_private_metrics`: then each client's unfinalized metrics go into its masked vector
    ([... | counts | metric limbs], `MetricsCodec`, exact to float32 resolution) and the server
    finalizes their sum. It costs one TFF call per client instead of one per round (the client
    work's metrics aggregator is swapped, at build time, for a sum of unfinalized metrics that a
    one-client call turns into that client's own values) and 3 coordinates per metric leaf;
    measured in BUILD.md. Off by default: the metrics and the TFF path then stay TFF's own, and
    the option is for runs that treat per-client losses and example counts as private;
  * with dp='fixed', the exact sum of the clipped updates before noise: the noise is added by
    the server after unmasking (central DP, as TFF's `DifferentiallyPrivateFactory`), so the
    guarantee holds against everyone who sees the model, not against the server;
  * with weighted algorithms, the sum of the example counts (the mean's denominator), and the
    numbers of clipped coordinates and clipped clients;
  * which clients advertised keys, shared, sent a masked input and answered (U1 ⊇ … ⊇ U5).
A protocol refusal (`secagg.ProtocolViolation`, e.g. a client refusing a deviating server) fails
the round with a one-line error of that class; no sum is ever returned.

Not implemented, and refused before any tracing (`tff_lab.aggregators.stack`; the simulation by
`tff_lab.training.config`): robust rules and compression (the server would need individual
updates), adaptive clipping and dp='adaptive' (they need a second, secure, quantile estimate),
and the in-graph simulations (`--simulation=fused|vectorized`).
"""

import collections
import contextlib
import dataclasses
import logging
import math
import time
import types
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
# Not exported by TFF: its DP aggregator's state type, and its clipping_factory arithmetic (so
# clipped updates equal the TFF path's).
from tensorflow_federated.python.aggregators import differential_privacy as tff_dp
from tensorflow_federated.python.aggregators import robust as tff_robust
# The module whose `sum_then_finalize` TFF's model-delta client work looks up at build time.
from tensorflow_federated.python.learning.metrics import aggregator as tff_metrics_aggregator

from tff_lab.aggregators import dp as dp_lib
from tff_lab.aggregators import stack
from tff_lab.algorithms import client_work as client_work_lib
from tff_lab.algorithms import registry
from tff_lab.algorithms import schedules
from tff_lab.privacy import secagg
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib

MODULUS_BITS = 32  # the largest field secagg's PRG fills (32-bit AES-CTR words)
# Default ranges r of one coordinate: of an update Δ, and of a weighted update w·Δ (e.g. |Δ_i| up
# to 100 from a client with 100 examples, or up to 10 from one with 1,000: FedSGD's gradients).
DEFAULT_RANGE = 100.0
DEFAULT_WEIGHTED_RANGE = 1e4
MAX_WEIGHT = 2**20 - 1  # tff.learning.secure_aggregator's bound on client weights
# --secagg_private_metrics: each metric leaf is a 48-bit fixed-point number, |v| < 2^23 with
# resolution 2^-24 (finer than float32's at the totals metrics reach), in three 16-bit limbs, one
# per coordinate; up to 2^16 − 1 clients' limbs sum without wrapping, so the sum is exact.
METRIC_FRACTION_BITS = 24
METRIC_LIMB_BITS = 16
METRIC_LIMBS = 3


@dataclasses.dataclass(frozen=True)
class DecodedSum:
  """The decoded sum of the survivors' contributions."""
  value: np.ndarray  # Σ w_k·Δ_k (weighted) or Σ Δ_k, float64 [d]
  weight: Optional[float]  # Σ w_k (weighted codecs), exact for integer weights
  clipped_coordinates: int
  norm_clipped: int
  metrics: Optional[np.ndarray] = None  # Σ of the unfinalized metric leaves (private metrics)


class MetricsCodec:
  """Unfinalized training metrics (flat leaves) as exact fixed-point limbs of Z_{2^32}.

  Leaf v becomes q = round(v·2^24) + 2^47 ∈ [0, 2^48), written as three 16-bit limbs; a sum of
  n ≤ 2^16 − 1 clients' limbs never wraps mod 2^32, so Σ q is exact. Integer leaves (example and
  batch counts) are exact; float leaves are within 2^-25 per client.
  """
  bound = 2.0**(METRIC_LIMB_BITS * METRIC_LIMBS - METRIC_FRACTION_BITS - 1)

  def __init__(self, num_leaves: int, num_clients: int):
    if num_clients >= 2**(MODULUS_BITS - METRIC_LIMB_BITS):
      raise ValueError(f'{num_clients} clients can overflow the metric limbs')
    self.num_leaves = num_leaves
    self.length = num_leaves * METRIC_LIMBS

  def encode(self, leaves: np.ndarray) -> tuple[np.ndarray, int]:
    """(limbs as uint64 residues, number of leaves clipped to ±2^23)."""
    leaves = np.asarray(leaves, np.float64)
    limit = self.bound - 2.0**-METRIC_FRACTION_BITS
    clipped = int(np.count_nonzero(np.abs(leaves) > limit))
    q = np.rint(np.clip(leaves, -limit, limit) * 2.0**METRIC_FRACTION_BITS).astype(np.int64)
    q = q + np.int64(2**(METRIC_LIMB_BITS * METRIC_LIMBS - 1))
    limbs = [(q >> (METRIC_LIMB_BITS * i)) & (2**METRIC_LIMB_BITS - 1) for i in range(METRIC_LIMBS)]
    return np.stack(limbs, axis=1).ravel().astype(np.uint64), clipped

  def decode(self, residues: np.ndarray, num_summed: int) -> np.ndarray:
    """The float64 sum of `num_summed` clients' leaves from the residues of their limbs' sum."""
    limbs = np.asarray(residues, np.uint64).reshape(self.num_leaves, METRIC_LIMBS)
    totals = []
    for row in limbs:
      q = sum(int(limb) << (METRIC_LIMB_BITS * i) for i, limb in enumerate(row))
      q -= num_summed * 2**(METRIC_LIMB_BITS * METRIC_LIMBS - 1)
      totals.append(q / 2.0**METRIC_FRACTION_BITS)
    return np.array(totals, np.float64)


class ContributionCodec:
  """One client's contribution as a vector of Z_{2^32}:
  [value | weight (weighted) | counts | metrics (private metrics)].

  See the module docstring for the layout and the error bound. All segments share the field, so
  one protocol run sums them; each segment has its own scale.
  """

  def __init__(self, vector_length: int, num_clients: int, value_range: float, weighted: bool,
               num_metrics: int = 0):
    """Arguments: d, n (most clients one sum may have), r, whether to carry weights, and the
    number of unfinalized metric leaves to carry (0: none, metrics are summed by TFF)."""
    self.vector_length = vector_length
    self.weighted = weighted
    self.metrics = MetricsCodec(num_metrics, num_clients) if num_metrics else None
    self.value = secagg.FixedPointEncoder(value_range, num_clients, MODULUS_BITS)
    levels = self.value.max_level
    if vector_length + 1 > levels:
      raise ValueError(f'a {vector_length}-coordinate update is too long to count its clipped '
                       f'coordinates for {num_clients} clients in Z_2^{MODULUS_BITS}')
    self._counts = secagg.FixedPointEncoder(float(levels), num_clients, MODULUS_BITS)  # scale 1
    self.weight = None
    if weighted:
      scale = 2.0**max(0, math.floor(math.log2(levels / MAX_WEIGHT)))
      self.weight = secagg.FixedPointEncoder(levels / scale, num_clients, MODULUS_BITS)
    self._counts_at = vector_length + (1 if weighted else 0)
    self.length = self._counts_at + 2 + (self.metrics.length if self.metrics else 0)

  def error_bound(self, num_summed: int) -> float:
    """Largest |decoded − exact| of one coordinate of a sum of `num_summed` unclipped values."""
    return num_summed / (2 * self.value.scale)

  def encode(self, update: np.ndarray, weight: float, norm_clipped: int,
             metrics: Optional[np.ndarray] = None) -> np.ndarray:
    """A client's flat float update, weight, norm-clipped flag (and unfinalized metric leaves)
    as residues mod 2^32."""
    value = np.asarray(update, np.float64)
    if self.weighted:
      value = value * float(weight)
    clipped = int(np.count_nonzero(np.abs(value) > self.value.clip_range))
    parts = [self.value.encode(value)]
    if self.weighted:
      clipped += int(abs(float(weight)) > self.weight.clip_range)
      parts.append(self.weight.encode(np.array([weight], np.float64)))
    if self.metrics is not None:
      metric_limbs, metrics_clipped = self.metrics.encode(metrics)
      clipped += metrics_clipped
    parts.append(self._counts.encode(np.array([clipped, int(norm_clipped)], np.float64)))
    if self.metrics is not None:
      parts.append(metric_limbs)
    return np.concatenate(parts)

  def decode(self, residues: np.ndarray, num_summed: int) -> DecodedSum:
    """The sum of `num_summed` contributions from the residues of their sum."""
    d = self.vector_length
    weight = None
    if self.weighted:
      weight = float(self.weight.decode_sum(residues[d:d + 1], num_summed)[0])
    c = self._counts_at
    counts = np.rint(self._counts.decode_sum(residues[c:c + 2], num_summed)).astype(np.int64)
    metrics = None
    if self.metrics is not None:
      metrics = self.metrics.decode(residues[c + 2:], num_summed)
    return DecodedSum(self.value.decode_sum(residues[:d], num_summed), weight, int(counts[0]),
                      int(counts[1]), metrics)


@dataclasses.dataclass(frozen=True)
class SecureMean:
  """The mean the server obtained, the decoded sum, and the protocol run it came from."""
  mean: np.ndarray  # float64 [d]
  decoded: DecodedSum
  protocol: secagg.SecAggResult
  threshold: int


def secure_mean(codec: ContributionCodec, contributions: Sequence[np.ndarray], num_dropped: int = 0,
                threshold: Optional[int] = None, noise_stddev: float = 0.0,
                denominator: Optional[float] = None,
                rng: Optional[np.random.Generator] = None, active: bool = False) -> SecureMean:
  """Phase 2: runs the protocol over one round's clients and turns the unmasked sum into a mean.

  Args:
    codec: Encodes the contributions.
    contributions: `codec.encode(...)` of each reporting client (protocol ids 0, 1, ...).
    num_dropped: Clients that take part in AdvertiseKeys and ShareKeys, then drop before sending
      a masked input (ids after the reporting ones); their masks are recovered from shares.
    threshold: Shamir threshold t; `secagg.default_threshold` of all the round's clients if None.
    noise_stddev: Std of the Gaussian noise the server adds to the decoded sum (DP), or 0.
    denominator: Divides the (noised) sum: the DP mean's fixed clients_per_round; None divides
      by the survivors' weight sum (weighted codec) or their number.
    rng: Draws the noise; fresh OS entropy if None.
    active: Run the protocol secure against an active server (`secagg.run_protocol`).

  Raises:
    secagg.InsufficientSharesError: One line, if fewer than t clients send their masked input:
      the protocol aborts and no sum is returned.
    secagg.SecAggError: One line, of the class the protocol raised, if a party refused a message
      (a `secagg.ProtocolViolation` naming the rule) or shares were inconsistent: no sum.
  """
  num_reporting = len(contributions)
  ids = range(num_reporting + num_dropped)
  zeros = np.zeros(codec.length, np.uint64)  # a dropped client's input: never sent
  inputs = {u: (contributions[u] if u < num_reporting else zeros) for u in ids}
  t = secagg.default_threshold(len(ids)) if threshold is None else threshold
  try:
    result = secagg.run_protocol(inputs, MODULUS_BITS, t,
                                 drop_after_sharing=range(num_reporting, len(ids)), active=active)
  except secagg.InsufficientSharesError as e:
    raise secagg.InsufficientSharesError(
        f'secure aggregation aborted: {num_reporting} of {len(ids)} clients sent a masked input, '
        f'fewer than the threshold t={t}, so no sum was computed ({e})') from None
  except secagg.SecAggError as e:
    message = ' '.join(str(e).split())
    raise type(e)(f'secure aggregation aborted, no sum was computed: {message}') from None
  decoded = codec.decode(result.sum, len(result.included))
  total = decoded.value
  if noise_stddev:
    rng = np.random.default_rng() if rng is None else rng
    total = total + rng.normal(0.0, noise_stddev, total.shape)
  if denominator is None:
    denominator = decoded.weight if codec.weighted else len(result.included)
  mean = total / denominator if denominator else np.zeros_like(total)  # TFF's divide_no_nan
  return SecureMean(mean, decoded, result, t)


def clip_and_flatten(update: Any, weight: tf.Tensor, clip: str, clip_norm: Optional[float]
                     ) -> 'collections.OrderedDict[str, tf.Tensor]':
  """One client's update clipped ('fixed': TFF's `clipping_factory`; 'dp': tensorflow-privacy's
  record clip; 'none') and flattened: `OrderedDict(update=float32[d], weight, norm_clipped)`."""
  leaves = tf.nest.flatten(update)
  norm_clipped = tf.constant(0, tf.int32)
  if clip != 'none':
    norm = tf.constant(clip_norm, tf.float32)
    if clip == 'fixed':
      clipped, global_norm = tff_robust._clip_by_global_l2_norm(  # pylint: disable=protected-access
          update, norm)
      leaves = tf.nest.flatten(clipped)
    else:
      leaves, global_norm = tf.clip_by_global_norm(leaves, norm)
    norm_clipped = tf.cast(global_norm > norm, tf.int32)
  flat = tf.concat([tf.reshape(tf.cast(x, tf.float32), [-1]) for x in leaves], axis=0)
  return collections.OrderedDict(update=flat, weight=weight, norm_clipped=norm_clipped)


class FusedClientPhase:
  """Phase 1 on the fast path (`--simulation=fused`): every client's local steps in one TF
  program (`tff_lab.algorithms.vectorized.FusedClientPhase`), then, per client, its attack
  (`client_work`'s own), the non-finite check and `clip_and_flatten`, as the TFF client work
  and `build_client_phase` do. Takes the round's `ClientPlan`s instead of datasets; returns
  `build_client_phase`'s layout (broadcast and client work are stateless here)."""

  def __init__(self, phase: Any, weighted: bool, clip: str, clip_norm: Optional[float]):
    self._phase = phase
    self._weighted = weighted

    @tf.function
    def prepare(delta, weight, attack):
      delta = client_work_lib._apply_attack(list(delta), attack)  # pylint: disable=protected-access
      delta, non_finite = tff.learning.tensor_utils.zero_all_if_any_non_finite(delta)
      weight = tf.where(tf.equal(non_finite, 0), weight, 0.0)
      return clip_and_flatten(delta, weight, clip, clip_norm)

    self._prepare = prepare

  def __call__(self, distributor_state, weights, client_work_state, plans):
    plans = list(plans)
    attacks = [p.attack.get_single_element() if p.attack is not None
               else client_work_lib.attack_spec().get_single_element() for p in plans]
    honest = types.SimpleNamespace(clients=[dataclasses.replace(p, attack=None) for p in plans])
    rate = schedules.client_rate_in(types.SimpleNamespace(client_work=client_work_state))
    results = self._phase(weights, honest, rate=rate)
    clients = [tf.nest.map_structure(np.asarray, self._prepare(
        [tf.constant(d) for d in r['delta']],
        tf.constant(r['num_examples'] if self._weighted else 1.0, tf.float32), attack))
               for r, attack in zip(results, attacks)]
    train = server_lib.train_metrics(
        sum(r['loss_sum'] for r in results), sum(r['correct'] for r in results),
        sum(r['num_examples'] for r in results), sum(r['num_steps'] for r in results))
    return collections.OrderedDict(
        distributor_state=distributor_state, distributor=(), client_work_state=client_work_state,
        client_work=collections.OrderedDict(train=train), clients=clients)

  def close(self) -> None:
    self._phase.close()


def build_client_phase(distributor: tff.learning.templates.DistributionProcess,
                       client_work: tff.learning.templates.ClientWorkProcess,
                       clip: str = 'none', clip_norm: Optional[float] = None
                       ) -> tff.Computation:
  """Phase 1 as one federated computation: broadcast, client work, per-client clip and flatten.

  Args:
    distributor: Broadcasts the server's model weights.
    client_work: The algorithm's client work.
    clip: 'none'; 'fixed', TFF's `clipping_factory` clip to L2 norm `clip_norm`; or 'dp',
      tensorflow-privacy's `GaussianSumQuery` record clip (`tf.clip_by_global_norm`).
    clip_norm: C for 'fixed' and 'dp'.

  Returns:
    A computation (distributor state, model weights, client work state, client data) →
    `OrderedDict(distributor_state=, distributor=, client_work_state=, client_work=, clients=)`,
    `clients` being CLIENTS-placed `OrderedDict(update=<float32 [d]>, weight=, norm_clipped=)`.
  """
  if clip not in ('none', 'fixed', 'dp'):
    raise ValueError(f"clip must be 'none', 'fixed' or 'dp', got {clip!r}")
  work_params = client_work.next.type_signature.parameter
  result_type = client_work.next.type_signature.result.result.member

  @tff.tensorflow.computation(result_type.update, result_type.update_weight)
  def prepare(update, weight):
    return clip_and_flatten(update, weight, clip, clip_norm)

  @tff.federated_computation(distributor.next.type_signature.parameter[0],
                             distributor.next.type_signature.parameter[1], work_params[0],
                             work_params[2])
  def client_phase(distributor_state, weights, client_work_state, client_data):
    distributed = distributor.next(distributor_state, weights)
    work = client_work.next(client_work_state, distributed.result, client_data)
    clients = tff.federated_map(prepare, (work.result.update, work.result.update_weight))
    return collections.OrderedDict(
        distributor_state=distributed.state, distributor=distributed.measurements,
        client_work_state=work.state, client_work=work.measurements, clients=clients)

  return client_phase


class SecureAggregationRounds:
  """Rounds of a TFF learning process whose aggregation is the real masking protocol.

  See the module docstring. `next` mirrors `process.next` of the process built for the same
  settings with `secure_aggregation=False`: same state structure, same metrics layout.
  """

  def __init__(self, task: task_lib.Task, algorithm: str,
               client_optimizer: Optional[tff.learning.optimizers.Optimizer],
               server_optimizer: tff.learning.optimizers.Optimizer,
               settings: stack.AggregationSettings, hparams: Optional[dict] = None,
               with_attacks: bool = False, scheduled_client_lr: Optional[float] = None,
               fused_phase: Optional[Any] = None):
    """Builds the round's TFF computations (tracing).

    Args:
      task: The task trained.
      algorithm: fedavg, fedavg_unweighted, fedprox or fedsgd.
      client_optimizer: The client optimiser (FedSGD ignores it).
      server_optimizer: The server optimiser, as in the learning process.
      settings: The aggregation settings; `secure_aggregation` must be set. `clients_per_round`
        bounds the clients of one sum (and is DP's denominator).
      hparams: The algorithm's hyperparameters (e.g. FedProx's `mu`); defaults for the rest.
      with_attacks: Clients take `OrderedDict(data=, attack=)` inputs (Byzantine updates).
      scheduled_client_lr: With a client learning-rate schedule, the first round's rate (the
        client work then reads each round's from its state, as in the process).
      fused_phase: A `tff_lab.algorithms.vectorized.FusedClientPhase` for the algorithm: phase 1
        then runs on the fast path (`FusedClientPhase` here; `next` takes `ClientPlan`s), not
        in TFF's runtime. Not with `secagg_private_metrics`.

    Raises:
      ValueError: For settings `stack.validate_aggregation_settings` refuses, or without
        `secure_aggregation`.
    """
    settings.validate()
    if not settings.secure_aggregation:
      raise ValueError('SecureAggregationRounds needs settings with secure_aggregation=True')
    self._settings = settings
    self._dp = settings.dp == 'fixed'
    # The Gaussian mechanism this runner applies after unmasking (ε is reported from it).
    self.dp_mechanism = dp_lib.GaussianMechanism(
        noise_multiplier=float(settings.noise_multiplier),
        clients_per_round=int(settings.clients_per_round), clip_norm=float(settings.clip_norm),
        adaptive=False) if self._dp else None
    self._weighted = registry.get(algorithm).weighted and not self._dp
    self._private_metrics = settings.secagg_private_metrics
    with _unfinalized_metric_sums() if self._private_metrics else contextlib.nullcontext():
      client_work = registry.create_client_work(algorithm, task, client_optimizer, hparams,
                                                with_attacks, scheduled_client_lr)
    num_metrics = 0
    if self._private_metrics:
      measurements_type = client_work.next.type_signature.result.measurements.member
      self._finalize = _build_finalizer(task, measurements_type)
      num_metrics = _count_leaves(measurements_type)
    weights_type = client_work.next.type_signature.parameter[1].member
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    self._finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer, weights_type)
    clip = 'dp' if self._dp else ('fixed' if settings.clip_norm is not None else 'none')
    if fused_phase is not None:
      if self._private_metrics:
        raise ValueError('secagg_private_metrics needs the TFF client phase (--simulation=tff)')
      self._client_phase = FusedClientPhase(fused_phase, self._weighted, clip,
                                            settings.clip_norm)
    else:
      self._client_phase = build_client_phase(distributor, client_work, clip,
                                              settings.clip_norm)
    self._shapes = [tuple(t.shape) for t in weights_type.trainable]
    self._dtypes = [t.dtype for t in weights_type.trainable]
    length = sum(int(np.prod(s)) for s in self._shapes)
    value_range = settings.secagg_range
    if value_range is None:
      exact = self._dp or (not self._weighted and settings.clip_norm is not None)
      value_range = (settings.clip_norm if exact else
                     DEFAULT_WEIGHTED_RANGE if self._weighted else DEFAULT_RANGE)
    self.codec = ContributionCodec(length, settings.clients_per_round, float(value_range),
                                   self._weighted, num_metrics)

  def next(self, state: Any, client_inputs: list, num_dropped: int = 0
           ) -> tff.learning.templates.LearningProcessOutput:
    """One round.

    Args:
      state: The learning process's `LearningAlgorithmState`.
      client_inputs: The reporting clients' inputs, as for `process.next`.
      num_dropped: Sampled clients that never report: they join the protocol's key advertisement
        and sharing, then drop, and their masks are recovered from shares.

    Raises:
      secagg.InsufficientSharesError: If fewer clients report than the threshold.
      secagg.ProtocolViolation: One line naming the rule, if a party refused a message.
      ValueError: With more clients than `clients_per_round`.
    """
    num_clients = len(client_inputs) + num_dropped
    if num_clients > self._settings.clients_per_round:
      raise ValueError(f'{num_clients} clients in one round; the secure sum is sized for '
                       f'clients_per_round={self._settings.clients_per_round}')
    if self._private_metrics:
      # One TFF call per client: its "sum" of metrics is the client's own, computed on the
      # client; only the protocol adds them up. (Broadcast and client work are stateless.)
      phases = [self._client_phase(state.distributor, state.global_model_weights,
                                   state.client_work, [x]) for x in client_inputs]
      phase = phases[-1] if phases else self._client_phase(
          state.distributor, state.global_model_weights, state.client_work, [])
      clients = [p['clients'][0] for p in phases]
      metric_leaves = [np.array(tf.nest.flatten(p['client_work']), np.float64) for p in phases]
    else:
      phase = self._client_phase(state.distributor, state.global_model_weights,
                                 state.client_work, list(client_inputs))
      clients = phase['clients']
      metric_leaves = [None] * len(clients)
    start = time.perf_counter()
    contributions = [self.codec.encode(c['update'], c['weight'], c['norm_clipped'], leaves)
                     for c, leaves in zip(clients, metric_leaves)]
    s = self._settings
    noise = s.noise_multiplier * s.clip_norm if self._dp else 0.0
    result = secure_mean(self.codec, contributions, num_dropped, s.secagg_threshold,
                         noise_stddev=noise,
                         denominator=float(s.clients_per_round) if self._dp else None,
                         active=s.secagg_active)
    protocol_seconds = time.perf_counter() - start
    client_work_metrics = phase['client_work']
    if self._private_metrics:
      client_work_metrics = self._finalize_metrics(phases[0]['client_work'],
                                                   result.decoded.metrics)
    if result.decoded.clipped_coordinates:
      logging.warning('secure aggregation clipped %d coordinates to its range ±%g; the mean is '
                      'biased: raise --secagg_range', result.decoded.clipped_coordinates,
                      self.codec.value.clip_range)
    offsets = np.cumsum([0] + [int(np.prod(shape)) for shape in self._shapes])
    update = [result.mean[a:b].reshape(shape).astype(dtype) for a, b, shape, dtype
              in zip(offsets[:-1], offsets[1:], self._shapes, self._dtypes)]
    finalized = self._finalizer.next(state.finalizer, state.global_model_weights, update)
    aggregator_state = state.aggregator
    if isinstance(aggregator_state, tff_dp.DPAggregatorState):
      aggregator_state = aggregator_state._replace(is_init_state=False)  # as TFF's DP next
    new_state = tff.learning.templates.LearningAlgorithmState(
        global_model_weights=finalized.result, distributor=phase['distributor_state'],
        client_work=phase['client_work_state'], aggregator=aggregator_state,
        finalizer=finalized.state)
    metrics = collections.OrderedDict(
        distributor=phase['distributor'], client_work=client_work_metrics,
        aggregator=self._measurements(result, len(clients), protocol_seconds),
        finalizer=finalized.measurements)
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  def _finalize_metrics(self, template: Any, sums: np.ndarray
                        ) -> 'collections.OrderedDict[str, Any]':
    """The client work's measurements from the protocol's sum of unfinalized metric leaves."""
    leaves = tf.nest.flatten(template)
    summed = [np.asarray(np.rint(v) if np.issubdtype(np.asarray(t).dtype, np.integer) else v,
                         np.asarray(t).dtype) for t, v in zip(leaves, sums)]
    return self._finalize(tf.nest.pack_sequence_as(template, summed))

  def _measurements(self, result: SecureMean, num_reporting: int, protocol_seconds: float
                    ) -> 'collections.OrderedDict[str, Any]':
    s, protocol = self._settings, result.protocol
    cost = protocol.cost
    started = len(cost.upload_bytes)  # every client of the run sent at least its keys
    out = collections.OrderedDict(num_clients=len(protocol.included))
    if s.clip_norm is not None and not self._dp:
      out['clipping_norm'] = float(s.clip_norm)
      out['clipped_count'] = result.decoded.norm_clipped
      out['clipped_fraction'] = result.decoded.norm_clipped / num_reporting
    if self._dp:
      out['dp_noise_stddev'] = float(s.noise_multiplier * s.clip_norm)
    out['clipped_coordinates'] = result.decoded.clipped_coordinates
    out['secagg'] = collections.OrderedDict(
        threshold=result.threshold, clients_started=started,
        masked_vectors_held=len(protocol.masked_inputs),
        recovered_masks=started - len(protocol.included),  # shared keys, sent no input
        vector_length=self.codec.length,
        client_seconds=float(np.mean(list(cost.client_seconds.values()))),
        server_seconds=float(cost.server_seconds), protocol_seconds=protocol_seconds)
    plain = 4 * self.codec.vector_length  # one float32 update, and the model broadcast
    out['secagg']['extra_upload_bytes_per_client'] = (
        cost.total_upload_bytes - plain * len(protocol.included)) / started
    out['secagg']['extra_download_bytes_per_client'] = cost.total_download_bytes / started
    out['upload_bytes_per_client'] = cost.total_upload_bytes / started
    out['download_bytes_per_client'] = plain + cost.total_download_bytes / started
    out['float32_upload_bytes_per_client'] = plain
    out['compression_ratio'] = plain * len(protocol.included) / cost.total_upload_bytes
    return out

  def close(self) -> None:
    """Releases the fused client phase's session, if any."""
    if isinstance(self._client_phase, FusedClientPhase):
      self._client_phase.close()


def _sum_unfinalized(metric_finalizers, local_unfinalized_metrics_type=None):
  """A metrics aggregator that sums the unfinalized metrics and does not finalize them."""
  del metric_finalizers, local_unfinalized_metrics_type  # finalized after the secure sum

  @tff.federated_computation
  def sum_unfinalized(unfinalized_metrics):
    return tff.federated_sum(unfinalized_metrics)

  return sum_unfinalized


@contextlib.contextmanager
def _unfinalized_metric_sums():
  """Client works built inside report unfinalized metric sums.

  tff_lab's client-work builders take no metrics aggregator; they all look up TFF's
  `sum_then_finalize` (in `tff.learning.metrics` or TFF's metrics `aggregator` module) when
  they are built, so both are swapped for the duration of the build.
  """
  modules = (tff.learning.metrics, tff_metrics_aggregator)
  saved = [m.sum_then_finalize for m in modules]
  try:
    for m in modules:
      m.sum_then_finalize = _sum_unfinalized
    yield
  finally:
    for m, original in zip(modules, saved):
      m.sum_then_finalize = original


def _build_finalizer(task: task_lib.Task, measurements_type) -> tff.Computation:
  """A computation: unfinalized metric sums (the client work's layout) → finalized metrics."""
  with tf.Graph().as_default():
    finalizers = task.tff_model_fn().metric_finalizers()

  @tff.tensorflow.computation(measurements_type)
  def finalize(measurements):
    return collections.OrderedDict(
        (name, collections.OrderedDict((metric, finalizers[metric](value))
                                       for metric, value in metrics.items()))
        for name, metrics in measurements.items())

  return finalize


def _count_leaves(type_spec) -> int:
  """The number of tensors in a TFF type."""
  if isinstance(type_spec, tff.TensorType):
    return 1
  return sum(_count_leaves(t) for _, t in tff.structure.iter_elements(type_spec))
