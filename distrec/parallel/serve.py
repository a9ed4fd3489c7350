"""`distrec serve` on Ray Serve: one `Predictor` per replica, HTTP on serve.host:serve.port.

    POST /recommend   needs `Authorization: Bearer <token>`; JSON in and out (distrec/inference/api.py)
    GET  /healthz     no token (for probes): the model's identity and the server's limits

Each request is checked on arrival (400 with a message), then waits for others (`@serve.batch`): one
model call answers a batch, so a bad request never fails the requests it would have been batched with.
Every other path needs the token too (401 before 404/405: routes are not shown to strangers).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import hmac
import logging
import socket

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from distrec.errors import ConfigError
from distrec.inference.api import answer_all, model_identity, parse
from distrec.inference.predictor import Predictor, RequestError

APP = "distrec"
MAX_BODY = 1 << 20  # bytes; a history of serve.max_history ids is far smaller
QUIET = {"log_level": "WARNING", "enable_access_log": False}  # Serve's logs, not a console line per request
log = logging.getLogger("ray.serve")


def error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


@serve.deployment(name="recommender")
class Endpoint:
    def __init__(self, load: dict, token: str, max_history: int, max_batch_size: int, batch_wait_timeout_s: float):
        self.predictor = Predictor.load(**load)
        self.token, self.max_history = token.encode(), max_history
        self.batched.set_max_batch_size(max_batch_size)  # the decorator's values are fixed at import
        self.batched.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batch_sizes = collections.Counter()  # requests per model call -> how many calls

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            return await self.route(request)
        except Exception as e:  # noqa: BLE001 - a 500 with its reason; the replica keeps serving
            log.exception("distrec serve: request failed")
            return error(500, f"internal error: {type(e).__name__}: {e}")

    async def route(self, request: Request) -> JSONResponse:
        path, method = request.url.path.rstrip("/") or "/", request.method
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return error(405, f"{method} /healthz: use GET", Allow="GET, HEAD")
            return JSONResponse(self.health())
        if not self.authorized(request.headers.get("authorization", "")):
            return error(401, "missing or wrong token: send the header 'Authorization: Bearer <token>' "
                         "(the token is in serve.token, $DISTREC_SERVE_TOKEN or <paths.root>/serve_token)",
                         **{"WWW-Authenticate": "Bearer"})
        if path != "/recommend":
            return error(404, f"no endpoint {path}: POST /recommend, GET /healthz")
        if method != "POST":
            return error(405, f"{method} /recommend: use POST with a JSON body", Allow="POST")
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(413, f"the body has {len(body):,} bytes; at most {MAX_BODY:,}")
        try:
            query = parse(body, self.predictor, self.max_history)
        except RequestError as e:
            return error(400, str(e))
        answer = await self.batched(query)
        if isinstance(answer, Exception):
            log.error("distrec serve: model call failed: %r", answer)
            return error(500, f"the model failed on this batch: {type(answer).__name__}: {answer}")
        return JSONResponse(answer)

    def authorized(self, header: str) -> bool:
        scheme, _, value = header.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)  # set from serve.* in __init__
    async def batched(self, queries: list) -> list:
        self.batch_sizes[len(queries)] += 1
        # in a thread: the event loop keeps taking requests (the next batch fills while the model runs)
        return await asyncio.to_thread(answer_all, self.predictor, queries)

    def health(self) -> dict:
        p = self.predictor
        return {"status": "ok", "model": model_identity(p) | {"num_items": p.num_items},
                "raw_ids": p.raw_ids is not None, "max_k": min(p.max_k, p.num_items), "max_history": self.max_history}

    def stats(self) -> dict:
        """Requests answered and model calls, by batch size (through a handle, not HTTP)."""
        return {"requests": sum(n * c for n, c in self.batch_sizes.items()),
                "batches": sum(self.batch_sizes.values()), "batch_sizes": dict(sorted(self.batch_sizes.items()))}


def check_port(host: str, port: int) -> None:
    """A clear error when the port is taken (Serve's proxy would retry binding it for minutes)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            why = "in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise ConfigError(f"serve.host={host} serve.port={port}: cannot listen there ({why}); "
                              "choose another serve.port") from None


def start(load: dict, *, token: str, host: str, port: int, replicas: int, max_history: int, max_batch_size: int,
          batch_wait_timeout_s: float, local: bool):
    """Deploy the endpoint on the connected Ray cluster; returns its handle once every replica answers.
    `load`: Predictor.load's arguments (each replica loads the model itself)."""
    import ray

    check_port(host, port)
    gpus = 1 if load.get("device", "cpu") != "cpu" else 0
    cpus = ray.cluster_resources().get("CPU", 0)
    if local and replicas > cpus:  # Serve would wait for the resources forever
        raise ConfigError(f"serve.replicas={replicas}: each replica takes a CPU and the local Ray cluster has "
                          f"{cpus:g}; lower serve.replicas or raise cluster.num_cpus")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # this process's "Started Serve", "ready at"
    serve.start(http_options={"host": host, "port": port}, logging_config=QUIET)
    app = Endpoint.options(
        num_replicas=replicas, ray_actor_options={"num_cpus": 1, "num_gpus": gpus},
        max_ongoing_requests=4 * max_batch_size,  # Serve's default (5) would cap every batch at 5
        max_constructor_retry_count=1,  # the driver has loaded the model already: a failure here is not transient
    ).bind(load, token, max_history, max_batch_size, batch_wait_timeout_s)
    return serve.run(app, name=APP, route_prefix="/", logging_config=QUIET)


def stats(handle) -> dict:
    return handle.stats.remote().result()


def stop(shutdown_ray: bool = True) -> None:
    """Remove the endpoint, Serve's controller and proxy actors, and (`shutdown_ray`) leave Ray, which ends
    a local cluster's processes."""
    import ray

    if ray.is_initialized():
        serve.shutdown()
        if shutdown_ray:
            ray.shutdown()
