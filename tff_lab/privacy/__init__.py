"""Privacy tools: DP accounting (`accounting`, and the `tff-lab-dp` CLI in `cli`) and the secure
aggregation protocol (`secagg`). The DP aggregator is in `tff_lab.aggregators.dp`; training with
the protocol, in `tff_lab.algorithms.secure_rounds`."""
