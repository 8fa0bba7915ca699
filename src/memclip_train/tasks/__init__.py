"""What a run learns. Each task builds its models, names the sample fields it needs, and computes its loss."""
from .base import Task
from .build import build_task

__all__ = ["Task", "build_task"]
