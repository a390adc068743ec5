"""The shell around a run: the entry point (main), the job Hydra runs (job), eva's
`--help` (help), the one-line error contract (errors) and a fast start-up (startup)."""
