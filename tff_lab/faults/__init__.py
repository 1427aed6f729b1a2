"""Simulated attacks and faults: Byzantine clients, dropouts and stragglers."""

from tff_lab.faults.simulation import assign_roles
from tff_lab.faults.simulation import ATTACKS
from tff_lab.faults.simulation import build_client_inputs
from tff_lab.faults.simulation import ClientPlan
from tff_lab.faults.simulation import FaultConfig
from tff_lab.faults.simulation import LABEL_FLIP_KINDS
from tff_lab.faults.simulation import materialize_client_inputs
from tff_lab.faults.simulation import plan_client_inputs
from tff_lab.faults.simulation import RoundRoles
