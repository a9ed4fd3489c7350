"""`distrec serve` for real: a tiny SASRec trained by the real stages on a generated catalog, served by
Ray Serve on 127.0.0.1, called over HTTP. Answers equal `Predictor.recommend`'s; concurrent requests
share model calls; every bad request gets its 4xx and a message; the command leaves no process behind."""

import concurrent.futures
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import psutil
import pytest
import requests

from distrec.config import compose

pytestmark = pytest.mark.ray

TINY = ["model.size=debug", "engine=plain", "train.global_batch_size=64", "train.max_steps=8",
        "train.warmup_steps=2", "train.eval_every=4", "train.patience=0", "train.val_max_users=100",
        "data.synthetic.num_items=300", "data.synthetic.num_users=400", "progress=false"]
TOKEN = "test-token-0123456789"
MAX_HISTORY, MAX_K = 60, 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import importlib

    root = tmp_path_factory.mktemp("serve")
    for name in ("prepare", "train"):
        importlib.import_module(f"distrec.stages.{name}").run(compose([f"stage={name}", f"paths.root={root}", *TINY]))
    return root


@pytest.fixture(scope="module")
def server(model, ray_local):
    from distrec.inference.predictor import Predictor
    from distrec.parallel.serve import start, stop

    load = dict(train_dir=str(model / "train"), data_dir=str(model / "data"), max_k=MAX_K)
    port = free_port()
    # a long batch wait: concurrent requests surely meet in one batch on a busy machine
    handle = start(load, token=TOKEN, host="127.0.0.1", port=port, replicas=1, max_history=MAX_HISTORY,
                   max_batch_size=16, batch_wait_timeout_s=0.2, local=True)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", handle=handle, predictor=Predictor.load(**load))
    stop(shutdown_ray=False)


def post(server, body, token=TOKEN, path="/recommend"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    return requests.post(server.url + path, headers=headers, timeout=60, **kwargs)


def expected(server, history, k, user_id=0):
    ids, scores = server.predictor.recommend([history], k, user_ids=[user_id])
    return ids[0].tolist(), scores[0].tolist()


def test_answers_equal_the_predictor_in_dense_and_raw_ids(server):
    history = [5, 17, 3, 250]
    r = post(server, {"history": history, "k": 7})
    assert r.status_code == 200, r.text
    out = r.json()
    items, scores = expected(server, history, 7)
    assert out["items"] == items and out["scores"] == pytest.approx(scores, rel=1e-5)
    assert out["raw_items"] == server.predictor.raw(items).tolist()
    identity = server.predictor.identity
    assert out["model"] == {"method": "sasrec", "model_hash": identity["model_hash"], "sid_hash": None,
                            "decoding": identity["decoding"]}

    raw = server.predictor.raw(history).tolist()
    r = post(server, {"history": raw, "raw_ids": True, "k": 7, "user_id": 12})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == items and r.json()["user_id"] == 12
    assert len(post(server, {"history": history}).json()["items"]) == 10  # k defaults to 10


def test_concurrent_requests_share_model_calls_and_a_bad_one_fails_alone(server):
    from distrec.parallel.serve import stats

    before = stats(server.handle)
    histories = [[1 + (7 * i + j) % 300 for j in range(1 + i % 5)] for i in range(12)]
    bodies = [{"history": h, "k": 5} for h in histories] + [{"history": [1, 999], "k": 5}]
    barrier = threading.Barrier(len(bodies))

    def call(body):
        barrier.wait()
        return post(server, body)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(call, bodies))
    for history, r in zip(histories, answers):
        assert r.status_code == 200, r.text
        items, scores = expected(server, history, 5)
        assert r.json()["scores"] == pytest.approx(scores, rel=1e-4, abs=1e-6)
    assert answers[-1].status_code == 400 and "outside the catalog" in answers[-1].json()["error"]
    after = stats(server.handle)
    assert after["requests"] - before["requests"] == len(histories)  # the bad one never reached the model
    assert after["batches"] - before["batches"] < len(histories)  # some model call answered several
    assert max(after["batch_sizes"]) > 1, after


BAD = [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    ({"k": 5}, 400, "missing field 'history'"),
    ({"history": "5"}, 400, "must be a list"),
    ({"history": [], "k": 5}, 400, "is empty"),
    ({"history": [1, 301]}, 400, "outside the catalog's 1..300"),
    ({"history": [1, 2.5]}, 400, "outside the catalog"),
    ({"history": ["1", "2"]}, 400, '"raw_ids": true'),
    ({"history": ["1", "no-such-item"], "raw_ids": True}, 400, "unknown raw item id"),
    ({"history": [1], "raw_ids": "yes"}, 400, "'raw_ids' must be true or false"),
    ({"history": [1], "k": 0}, 400, f"k must be an integer in [1, {MAX_K}]"),
    ({"history": [1], "k": MAX_K + 1}, 400, "k must be an integer"),
    ({"history": [1], "k": "10"}, 400, "k must be an integer"),
    ({"history": [1], "user_id": -3}, 400, "'user_id' must be an integer"),
    ({"history": [1], "histroy": [2]}, 400, "unknown field(s) ['histroy']"),
    ({"history": [1] * (MAX_HISTORY + 1)}, 400, f"more than this server takes ({MAX_HISTORY}"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[m for _, _, m in BAD])
def test_a_bad_request_gets_its_4xx_and_a_message(server, body, status, message):
    r = post(server, body)
    assert r.status_code == status and r.json()["status"] == status
    assert message in r.json()["error"], r.json()


def test_wrong_method_unknown_path_and_the_token(server):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = requests.get(server.url + "/recommend", headers=auth, timeout=60)
    assert r.status_code == 405 and "use POST" in r.json()["error"] and r.headers["allow"] == "POST"
    r = post(server, {"history": [1]}, path="/recomend")
    assert r.status_code == 404 and "POST /recommend" in r.json()["error"]
    for token in (None, "wrong", TOKEN + "x"):
        r = post(server, {"history": [1]}, token=token)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    r = requests.post(server.url + "/recommend", json={"history": [1]}, timeout=60,
                      headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401
    health = requests.get(server.url + "/healthz", timeout=60)  # no token: for probes
    assert health.status_code == 200 and health.json()["model"]["num_items"] == 300
    assert health.json()["max_k"] == MAX_K and health.json()["max_history"] == MAX_HISTORY
    assert post(server, {"history": [1, 2]}).status_code == 200  # still serving after all that


def test_the_token_comes_from_config_environment_or_a_private_file(tmp_path, monkeypatch):
    from distrec.stages.serve import TOKEN_ENV, token

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert token(SimpleNamespace(token="abc"), tmp_path) == ("abc", "serve.token")
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert token(SimpleNamespace(token=None), tmp_path) == ("from-env", f"${TOKEN_ENV}")
    monkeypatch.delenv(TOKEN_ENV)
    (tmp_path / "serve_token").write_text("old")
    os.chmod(tmp_path / "serve_token", 0o644)
    value, where = token(SimpleNamespace(token=None), tmp_path)
    assert where == str(tmp_path / "serve_token") and (tmp_path / "serve_token").read_text() == value + "\n"
    assert len(value) >= 32 and stat.S_IMODE(os.stat(where).st_mode) == 0o600


def test_a_taken_port_too_many_replicas_or_a_bad_setting_fail_with_a_message(model, ray_local):
    from distrec.errors import ConfigError
    from distrec.parallel.serve import check_port, start
    from distrec.stages.serve import run

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match=r"\(in use\); choose another serve.port"):
            check_port("127.0.0.1", taken.getsockname()[1])
    with pytest.raises(ConfigError, match="serve.replicas=5: each replica takes a CPU"):
        start({}, token=TOKEN, host="127.0.0.1", port=free_port(), replicas=5, max_history=10, max_batch_size=4,
              batch_wait_timeout_s=0.0, local=True)
    with pytest.raises(ConfigError, match="serve.port=70000"):
        run(compose(["stage=serve", f"paths.root={model}", "serve.port=70000"]))


def serve_command(model, *overrides):
    """`distrec serve` in a subprocess, its output read by a thread; returns (process, url, lines, token file)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DISTREC_SERVE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "distrec", "serve", f"paths.root={model}", f"serve.port={port}",
                             *overrides], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, f"http://127.0.0.1:{port}", lines, model / "serve_token"


def wait_until_up(proc, lines, timeout=240):
    """Until the command prints how to call it (the endpoint is up: serve.run returned)."""
    deadline = time.monotonic() + timeout
    while not any(line.startswith("  stop:") for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"distrec serve did not start (exit {proc.wait()}): {''.join(lines)}")
        time.sleep(0.2)


def finish(proc, lines, timeout=120) -> str:
    proc.wait(timeout=timeout)
    time.sleep(0.2)  # the reader thread's last lines
    return "".join(lines)


def ray_session(pid) -> tuple[list[psutil.Process], set[str]]:
    """The processes under `pid` and the private Ray temp dirs their command lines name."""
    procs = psutil.Process(pid).children(recursive=True)
    temp_dirs = {arg.split("=", 1)[1].split("/session_")[0] for p in procs for arg in _cmdline(p)
                 if "=/tmp/distrec-ray-" in arg}
    assert any("raylet" in " ".join(_cmdline(p)) for p in procs) and temp_dirs  # the command's own local cluster
    return procs, temp_dirs


def assert_all_gone(procs: list[psutil.Process], temp_dirs: set[str]):
    """No process of the command's Ray session is left (is_running: the same pid and start time), and its
    temp dir is removed."""
    alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.name()) for p in alive]
    left = [p.pid for p in psutil.process_iter() if any(d in " ".join(_cmdline(p)) for d in temp_dirs)]
    assert not left and not any(os.path.exists(d) for d in temp_dirs), (left, temp_dirs)


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_sigterm_stops_the_command_and_its_ray_processes(model):
    proc, url, lines, token_file = serve_command(model, "serve.max_batch_size=4")
    try:
        wait_until_up(proc, lines)
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        token = token_file.read_text().strip()
        r = requests.post(url + "/recommend", json={"history": [3, 4], "k": 3}, timeout=60,
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        session = ray_session(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out = finish(proc, lines)
    finally:
        proc.kill()
    assert proc.returncode == 143, out
    assert f"Authorization: Bearer $(cat {token_file})" in out and "stopped by SIGTERM" in out
    assert_all_gone(*session)


@pytest.mark.slow
def test_duration_ends_the_command_cleanly(model):
    proc, url, lines, _ = serve_command(model, "serve.duration_s=3")
    try:
        wait_until_up(proc, lines)
        session = ray_session(proc.pid)
        assert requests.get(url + "/healthz", timeout=60).status_code == 200
        out = finish(proc, lines)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped after 3 s (serve.duration_s)" in out, out
    assert_all_gone(*session)
