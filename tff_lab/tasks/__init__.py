"""Tasks: federated client data paired with a Keras model builder, loss, metrics and preprocessing."""

from tff_lab.tasks.arrays import from_arrays
from tff_lab.tasks.registry import create_task
from tff_lab.tasks.registry import register
from tff_lab.tasks.registry import task_names
from tff_lab.tasks.registry import task_options
from tff_lab.tasks.registry import TASK_BUILDERS
from tff_lab.tasks.task import ClientSpec
from tff_lab.tasks.task import Task
