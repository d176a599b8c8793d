"""FSDP2 GRPO learner group: one `LearnerWorker` per rank (see `worker.py`)."""
from gdro_ray.learner.worker import LearnerWorker

__all__ = ["LearnerWorker"]
