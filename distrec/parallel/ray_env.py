"""Starting or joining a Ray cluster. Ray is imported only under distrec/parallel/."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time

from distrec.errors import ConfigError

log = logging.getLogger("distrec")

# Ray gives a new node a fixed 30 s to register; on a busy machine that fails now and then.
START_ATTEMPTS = 3
START_FAILURES = ("timed out during startup", "Failed to start GCS")

# Keep a local cluster on loopback and send no usage reports (see README.md and ../shared stack notes).
LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
    # no node of a one-machine cluster is preempted; Ray Train's watcher only logs a core_worker.cc error
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
# Passed on to the workers only when the driver's environment sets them. DS_ACCELERATOR is not forced
# to cpu: on a GPU node that makes DeepSpeed ignore the GPUs; each worker's `import_deepspeed` picks
# cpu itself where torch sees no GPU.
PASSED_ENV = ("DS_ACCELERATOR",)

# Ray Train's INFO lines at each report of a local cluster's workers (distrec prints each validation itself):
# "Checkpoint successfully created at: ..." and "Reporting training result N: <every metric>" (that
# logger is named after its file)
QUIET_LOGGERS = ("ray.train.v2._internal.execution.storage", "train/v2/_internal/execution/context.py")
# Ray Train's placement-group cleaner polls the State API, which needs the dashboard (off in a local
# cluster), and warns at every poll (~30 lines a run); its other warnings stay.
CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
NO_STATE_API = "Failed to query Ray Train Controller actor state"


def apply_local_env() -> None:
    """Set LOCAL_ENV where the environment does not say otherwise; before Ray is first imported is best."""
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def setup_worker() -> None:
    """Runs in every worker process of the local cluster (runtime_env `worker_process_setup_hook`).

    RAY_ADDRESS: Ray code in a worker that looks for "the" cluster (the State API client of Ray Train's
    placement-group cleaner) would otherwise scan the machine and, when other Ray clusters run there,
    fail ("Found multiple active Ray instances") or pick another one. Logging: filters, not levels, as
    Ray Train re-configures its loggers' levels after this hook.
    """
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    for name in QUIET_LOGGERS:
        name = os.path.join(os.path.dirname(ray.__file__), name) if name.endswith(".py") else name
        logging.getLogger(name).addFilter(lambda record: record.levelno >= logging.WARNING)
    logging.getLogger(CLEANER).addFilter(lambda record: NO_STATE_API not in record.getMessage())


def private_temp_dir() -> str:
    """A temp dir of the local cluster's own, removed at exit. In the shared /tmp/ray, Ray finds the
    sessions of other processes' clusters ("Found multiple active Ray instances"). Short: Ray's socket
    paths under it must fit in 107 characters."""
    path = tempfile.mkdtemp(prefix="distrec-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)

    def remove():  # before Ray's own exit handler, registered when Ray was imported
        import ray

        ray.shutdown()
        shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def _agree_on_auth_mode():
    """Give the processes we start the auth mode this driver already uses.

    Ray reads RAY_AUTH_MODE once per process, the first time anything asks (importing
    ray.autoscaler is enough). If that happened before we set it, a GCS started with our
    setting would refuse this very driver ("InvalidAuthToken"), so follow the driver.
    """
    from ray._raylet import AuthenticationMode, get_authentication_mode

    mode = "token" if get_authentication_mode() == AuthenticationMode.TOKEN else "disabled"
    if os.environ["RAY_AUTH_MODE"].lower() != mode:
        log.warning("Ray in this process already runs with RAY_AUTH_MODE=%s; using it for the local cluster", mode)
        os.environ["RAY_AUTH_MODE"] = mode


CONNECT_TIMEOUT_S = 5
JOIN_WAIT_ENV, JOIN_ATTEMPTS = "RAY_gcs_server_port_wait_time_s", 3
START_HINT = ("start the cluster first (`ray start --head`, or launch/local_cluster.sh start), fix the address, "
              "or set cluster.address=null to run a local Ray in this process")


# An HTTP/2 client's connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray
# Client server) answers with its own SETTINGS frame (type 4) at once.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_reachable(address: str) -> None:
    """Fail within seconds when no gRPC server answers at a `host:port` (or `ray://host:port`)
    cluster.address: Ray itself tries an unreachable or silent GCS for minutes (~40 s a try). Other
    forms (`auto`) are left to Ray, and so is a cluster with TLS (RAY_USE_TLS)."""
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as s:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            s.sendall(H2_PREFACE)
            answer = s.recv(9)
    except OSError as e:
        reason = f"no answer in {CONNECT_TIMEOUT_S} s" if isinstance(e, socket.timeout) else e.strerror or e
        raise ConfigError(f"cluster.address={address}: no Ray cluster reachable at {host}:{port} ({reason}); "
                          + START_HINT) from None
    if len(answer) < 4 or answer[3] != 4:
        raise ConfigError(f"cluster.address={address}: what listens at {host}:{port} is not a Ray cluster (no "
                          "gRPC answer; the head's GCS port is 6379 by default, RAY_PORT for "
                          f"launch/local_cluster.sh); {START_HINT}")


@contextlib.contextmanager
def _keep_sigterm_handler():
    """Ray's core worker installs a C++ handler that dumps a stack and aborts (exit 134) on SIGTERM;
    keep this process's own handler (the CLI's: clean up, one line, exit 143)."""
    ours = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if callable(ours):
            signal.signal(signal.SIGTERM, ours)


def worker_runtime_env() -> dict:
    """The local cluster's runtime env: LOCAL_ENV, and PASSED_ENV where the driver sets them."""
    env = {k: os.environ[k] for k in LOCAL_ENV} | {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    return {"env_vars": env, "worker_process_setup_hook": "distrec.parallel.ray_env.setup_worker"}


def init_ray(cluster=None, **kwargs):
    """Connect to `cluster.address` or start a local cluster on 127.0.0.1; idempotent.

    `cluster` is a ClusterConfig (or None for defaults); kwargs go to `ray.init`.
    """
    apply_local_env()
    import ray

    _agree_on_auth_mode()
    if ray.is_initialized():
        return ray
    with _keep_sigterm_handler():
        return _init(ray, cluster, **kwargs)


def _init(ray, cluster, **kwargs):
    address = getattr(cluster, "address", None)
    if address:
        check_reachable(address)
        # Ray tries a GCS that does not answer ~20 times (minutes when each try times out); a running
        # cluster answers the first. The user's own RAY_gcs_server_port_wait_time_s wins.
        ours = JOIN_WAIT_ENV not in os.environ
        os.environ.setdefault(JOIN_WAIT_ENV, str(JOIN_ATTEMPTS))
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as e:  # nothing at `auto`, or not a Ray GCS at that port
            raise ConfigError(f"cluster.address={address}: {e}; {START_HINT}") from None
        finally:
            if ours:
                del os.environ[JOIN_WAIT_ENV]
        return ray
    # explicit kwargs (e.g. the tests' num_cpus=2) win over the cluster config
    kwargs.setdefault("num_cpus", getattr(cluster, "num_cpus", None))
    kwargs.setdefault("object_store_memory", getattr(cluster, "object_store_memory", None))
    kwargs.setdefault("include_dashboard", getattr(cluster, "include_dashboard", False))
    kwargs.setdefault("_temp_dir", private_temp_dir())
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            ray.init(
                _node_ip_address="127.0.0.1",
                runtime_env=worker_runtime_env(),
                **kwargs,
            )
            return ray
        except Exception as e:  # Ray raises a bare Exception for this
            if not any(m in str(e) for m in START_FAILURES) or attempt == START_ATTEMPTS:
                raise
            log.warning("local Ray cluster did not start in time (attempt %d of %d; machine busy?): retrying",
                        attempt, START_ATTEMPTS)
            ray.shutdown()
            time.sleep(5)
    return ray
