"""Privacy tools: DP accounting (`accounting`, and the `tff-lab-dp` CLI in `cli`) and the secure
aggregation protocol (`secagg`). The TFF aggregators built on them are in `tff_lab.aggregators`
(`dp`, `secure`)."""
