"""Tasks as registered entries (:mod:`medlens.tasks.registry`): classify, segment, ….

Adding a task: write its entry module (a :class:`TaskSpec` named ``TASK``) and add one line
to :data:`~medlens.tasks.registry.BUILTIN_TASKS` (or, from another package, to the
``medlens.tasks`` entry-point group).
"""

from __future__ import annotations

from medlens.tasks.registry import (
    Predictor,
    Summary,
    TaskSpec,
    all_tasks,
    check_options,
    detect_task,
    get_task,
    register_task,
    task_names,
    task_of,
)

__all__ = ["Predictor", "Summary", "TaskSpec", "all_tasks", "check_options", "detect_task", "get_task",
           "register_task", "task_names", "task_of"]
