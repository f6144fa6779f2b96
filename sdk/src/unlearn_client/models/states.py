"""The statuses in which jobs and requests end."""

TERMINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_REQUEST_STATUSES = frozenset({"completed", "failed", "cancelled"})
