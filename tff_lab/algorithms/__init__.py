"""Federated algorithms as `tff.learning` learning processes, and the blocks to write your own.

An algorithm is an `AlgorithmSpec` (`register(spec)`; spec.py, "Adding an algorithm"). Its local
step is a `LocalStep`: a transform of the loss gradient (FedProx's proximal term is
`PROXIMAL_SGD`), run by TFF's client work and by the in-graph backends alike. An algorithm that
needs each client's result (control variates, step counts) gets them from
`create_client_phase(simulation, task, learning_rate, local_step, ...)`, on the `tff` and
`fused` backends (`read_results` turns them into NumPy and the round's training totals),
keeps per-client state in a `ClientStore` (`tff_lab.simulation.client_store`),
and ends its round with the server step every backend shares (`tff_lab.simulation.server`).
"""

from tff_lab.algorithms.fedavg import build_fedavg
from tff_lab.algorithms.fedprox import build_fedprox
from tff_lab.algorithms.fedsgd import build_fedsgd
from tff_lab.algorithms.optimizers import create_optimizer
from tff_lab.algorithms.optimizers import optimizer_hparams
from tff_lab.algorithms.optimizers import optimizer_names
from tff_lab.algorithms.registry import ALGORITHMS
from tff_lab.algorithms.registry import check_algorithm
from tff_lab.algorithms.registry import create_learning_process
from tff_lab.algorithms.client_phase import create_client_phase
from tff_lab.algorithms.client_phase import read_results
from tff_lab.algorithms.spec import AlgorithmSpec
from tff_lab.algorithms.spec import Hyperparameter
from tff_lab.algorithms.spec import LocalStep
from tff_lab.algorithms.spec import PLAIN_SGD
from tff_lab.algorithms.spec import PROXIMAL_SGD
from tff_lab.algorithms.spec import register
