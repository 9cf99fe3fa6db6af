"""Connecting to a Ray runtime: ``local`` (started for this run, on 127.0.0.1, shut down at the
end; ``local:N`` with N CPUs), ``auto`` (a running cluster, e.g. after ``ray start --head``) or
``HOST:PORT``."""

from __future__ import annotations

import contextlib
import os

from vnncomp_qeb.errors import QebError


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode, 127.0.0.1 only


@contextlib.contextmanager
def ray_runtime(address: str, num_cpus: int | None = None):
    """Context in which ``ray`` is initialised for ``address``; yields the ray module."""
    if address.startswith("local:"):  # local:N — a local runtime with N CPUs (simulated scale-out)
        try:
            num_cpus, address = int(address.split(":", 1)[1]), "local"
        except ValueError:
            raise QebError(f"--ray local:N needs a number of CPUs, got {address!r}") from None
    if address == "local":
        # every part of a local runtime on the loopback address (Ray otherwise advertises the
        # machine's outward IP even when told 127.0.0.1)
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is in requirements.txt
        raise QebError(f"--ray needs the ray package ({exc}); pip install -r requirements.txt") from None
    if ray.is_initialized():  # a caller (a test's cluster) already connected this process
        yield ray
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  runtime_env={"env_vars": {"PYTHONPATH": _package_root()}})
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:  # ConnectionError, ValueError, ray's own errors
        raise QebError(f"cannot reach the Ray cluster at {address!r} ({type(exc).__name__}: {exc})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _package_root() -> str:
    """The folder holding ``vnncomp_qeb``: workers import the same code as the driver."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def node_name() -> str:
    """The Ray node this code runs on: its IP and a short node id."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray._private.worker.global_worker.node_ip_address}/{ctx.get_node_id()[:8]}"
