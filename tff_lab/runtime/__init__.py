"""Execution runtime: TFF contexts and the lifecycle of the worker processes behind them."""

from tff_lab.runtime.context import create_local_context
from tff_lab.runtime.context import current_worker
from tff_lab.runtime.context import set_local_context
from tff_lab.runtime.remote import create_remote_context
from tff_lab.runtime.remote import parse_workers
from tff_lab.runtime.remote import set_remote_context
from tff_lab.runtime.remote import WorkerError
from tff_lab.runtime.workers import live_workers
from tff_lab.runtime.workers import ManagedWorker
from tff_lab.runtime.workers import stop_all_workers
