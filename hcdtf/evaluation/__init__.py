"""Evaluation: metrics with DeLong and bootstrap (`metrics`), calibration, repeats, the evaluation
files of a run (`artifacts`, `runinfo`), plots, `hcdtf evaluate` (`evaluate`) and the comparison
report (`report`, `report_markdown`)."""
