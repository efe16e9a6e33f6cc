"""Where it runs: devices, memory estimates, process-wide runtime settings, and XLA's cost model."""
