"""What a job's console must not show: Ray's own output, which stays in its session's log files."""

# lines of Ray's that a plain job printed before aikd kept its console to its own lines
NOISE = ["PlacementGroupCleaner", "State API may be temporarily unavailable", "Execution plan of Dataset",
         "Progress bars disabled", "Starting execution of Dataset", "Trial status", "Checkpoint successfully created",
         "Reporting training result", "(RayTrainWorker pid=", "(MapWorker(", "Token authentication is enabled",
         "Creating initial MLflow database tables", "worker processes have been started",
         "has constructor arguments in the object store",
         # Tune's experiment table and result paths, Optuna's study note: a sweep prints a line per trial instead
         "Configuration for experiment", "View detailed results here", "To visualize your results with TensorBoard",
         "A new study created"]


def noise(text: str) -> list[str]:
    """The lines of ``text`` that are Ray's noise."""
    return [line for line in text.splitlines() if any(marker in line for marker in NOISE)]


# A worker's lines that a second attempt prints again: when a Train worker fails (an S3 fault in a test run),
# Ray Train starts the worker group again and each attempt resumes from the same checkpoint.
EACH_ATTEMPT = ("distill: resumed at step",)


def doubled(text: str, prefix: str) -> list[str]:
    """Lines starting with ``prefix`` printed twice in a row (a worker's line forwarded twice)."""
    lines = [line for line in text.splitlines() if line.startswith(prefix) and not line.startswith(EACH_ATTEMPT)]
    return [a for a, b in zip(lines, lines[1:], strict=False) if a == b]
