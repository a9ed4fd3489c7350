"""Sweep jobs as Ray tasks: each point's `distrec` subprocesses run on whichever node has the CPUs
(`sweep.cpus_per_point`), up to `sweep.max_concurrent` at once. On a cluster, start the sweep
with one `ray job submit` and put `sweep.out_dir` on storage every node shares."""

from __future__ import annotations

from distrec.parallel.ray_env import init_ray
from distrec.errors import StageFailed


def _call(fn, job):
    return fn(job)


class RayExecutor:
    """submit/wait over Ray tasks, the interface `distrec.scaling.sweep.schedule` drives."""

    def __init__(self, cluster=None):
        self.ray = init_ray(cluster)
        self.task = self.ray.remote(max_retries=0)(_call)  # retries are the sweep's, with a report

    def submit(self, fn, job):
        return self.task.options(num_cpus=job.cpus).remote(fn, job)

    def wait(self, handles):
        ready, _ = self.ray.wait(handles, num_returns=1)
        try:
            return ready[0], self.ray.get(ready[0]), None
        except self.ray.exceptions.RayError as e:
            # a failed stage's own message (its log tail); anything else with Ray's remote traceback
            cause = getattr(e, "cause", None)
            return ready[0], None, str(cause) if isinstance(cause, StageFailed) else str(e)
