"""Datasets and tasks: MNIST (plain, translated, cluttered) and the task registry."""

from wsi_dram.data.tasks import (
    SensorSpec,
    Task,
    TaskConfig,
    build_task,
    register_task,
    task_options,
)

__all__ = [
    "SensorSpec",
    "Task",
    "TaskConfig",
    "build_task",
    "register_task",
    "task_options",
]
