"""`tff.aggregators` factories: robust rules, compression and DP, and the stack that composes them
from flags (`create_aggregator`). Secure aggregation, which cannot run inside a TFF computation,
is a round runner: `tff_lab.algorithms.secure_rounds`. Aggregators of your own:
`register(name, factory_builder)` (registry.py); their building blocks: `GatheredRuleFactory`
(a server-side rule on the stacked client updates is one method), and the communication
counters that the built-in ones report (`dense_communication(value)` for an uncompressed upload;
`count_clients`, `type_bytes` and `communication_measurements` for others; docs/extending.md)."""

from tff_lab.aggregators.compression import communication
from tff_lab.aggregators.compression import communication_measurements
from tff_lab.aggregators.compression import count_clients
from tff_lab.aggregators.compression import dense_communication
from tff_lab.aggregators.compression import type_bytes
from tff_lab.aggregators.registry import register
from tff_lab.aggregators.robust import GatheredRuleFactory

from tff_lab.aggregators.stack import AGGREGATORS
from tff_lab.aggregators.stack import AggregationSettings
from tff_lab.aggregators.stack import COMPRESSIONS
from tff_lab.aggregators.stack import create_aggregator
from tff_lab.aggregators.stack import validate_aggregation_settings
from tff_lab.aggregators.stack import without_secure_aggregation
