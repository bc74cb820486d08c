"""Running on several devices or machines: data parallelism and Keras Tuner's chief/workers.

Two independent mechanisms:

- ``--strategy mirrored|multi-worker`` wraps each member's model building and training in the
  backend's own data-parallel engine: a ``tf.distribute`` strategy scope on TensorFlow (all local
  GPUs, or the cluster named by ``TF_CONFIG``), a ``keras.distribution.DataParallel`` scope on JAX
  (all local devices, or every process's after ``keras.distribution.initialize()``, which reads
  the JAX coordinator's environment). PyTorch has no Keras data-parallel engine: it is refused.
- ``--chief [HOST:]PORT`` / ``--worker HOST:PORT`` (or Keras Tuner's own ``KERASTUNER_TUNER_ID``,
  ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``) split each search's trials across processes:
  the chief serves the oracle and then turns the best trials into members; workers run trials. The
  search of the profile's k-th tuned member uses PORT + k (dropped members keep their number), so
  a worker never talks to another search's oracle.

The chief's gRPC oracle server checks a shared token (``--token`` / ``ZOOBENCH_TOKEN``): a server
interceptor compares each call's ``authorization`` metadata with it (``hmac.compare_digest``) and
aborts anything else with UNAUTHENTICATED; the worker's channel carries a client interceptor that
adds the metadata and turns that refusal into a one-line :class:`ZoobenchError`. A chief that
listens beyond loopback without a token generates one (``secrets.token_urlsafe``) and prints it
once to stderr; on loopback a token is optional but honoured when given. The token keeps other
processes from creating and reporting trials; the channel is not encrypted (gRPC's call
credentials need TLS), so on an untrusted network tunnel the port (``ssh -L``).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import sys
from typing import Any

from benchmark.errors import ZoobenchError

STRATEGIES = ("none", "mirrored", "multi-worker")
ENV_ID, ENV_IP, ENV_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
ENV_TOKEN = "ZOOBENCH_TOKEN"
AUTH_METADATA = "authorization"  # the metadata key a worker's token travels under ("Bearer TOKEN")
REFUSAL = "wrong or missing token (--token / ZOOBENCH_TOKEN)"  # the chief's UNAUTHENTICATED detail

log = logging.getLogger(__name__)


def make_strategy(name: str | None):
    """The data-parallel strategy called ``name`` on this backend (None or "none": no strategy)."""
    if name in (None, "", "none"):
        return None
    if name not in STRATEGIES:
        raise ZoobenchError(
            f"--strategy: unknown strategy {name!r} (one of {', '.join(STRATEGIES)})"
        )
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        if name == "multi-worker":
            keras.distribution.initialize()
        return keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    if backend != "tensorflow":
        raise ZoobenchError(
            f"--strategy {name}: the {backend} backend has no Keras data-parallel engine; "
            "use the tensorflow or jax backend"
        )
    import tensorflow as tf

    if name == "mirrored":
        if not tf.config.list_logical_devices("GPU"):  # CPU only: mirror over the logical CPUs
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            if len(cpus) > 1:
                return tf.distribute.MirroredStrategy(devices=cpus)
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()


def scope(strategy) -> contextlib.AbstractContextManager[Any]:
    """``strategy.scope()`` (a tf.distribute strategy or a keras.distribution), or a no-op."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _split_address(text: str, option: str, need_host: bool) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = "", str(text)
    if need_host and not host:
        raise ZoobenchError(f"{option}: give HOST:PORT of the chief, got {text!r}")
    try:
        number = int(port)
    except ValueError:
        raise ZoobenchError(f"{option}: {port!r} is not a port number") from None
    if not 0 < number < 65536:
        raise ZoobenchError(f"{option}: port {number} is out of range")
    return host, number


def configure_tuning(
    chief: str | None = None,
    worker: str | None = None,
    tuner_id: str | None = None,
    token: str | None = None,
) -> str | None:
    """Set Keras Tuner's environment for the chief or a worker; returns the role (None: alone).

    The chief binds 127.0.0.1 unless ``chief`` names a host (``0.0.0.0`` to listen everywhere).
    ``token`` (else ``ZOOBENCH_TOKEN``) is the shared secret workers present to the chief; a chief
    listening beyond loopback without one generates it and prints it to stderr (see
    :func:`chief_token`).
    """
    if chief and worker:
        raise ZoobenchError("--chief and --worker exclude each other")
    # Validate everything before touching the environment: a refused call changes nothing.
    if token is not None:
        token = _check_token(token, "--token")
    if chief:
        host, port = _split_address(chief, "--chief", need_host=False)
        settings = {ENV_IP: host or "127.0.0.1", ENV_PORT: str(port), ENV_ID: "chief"}
    elif worker:
        host, port = _split_address(worker, "--worker", need_host=True)
        tuner = tuner_id or os.environ.get(ENV_ID) or f"worker-{os.getpid()}"
        if "chief" in tuner:
            raise ZoobenchError(f"a worker's tuner id must not contain 'chief': {tuner!r}")
        settings = {ENV_IP: host, ENV_PORT: str(port), ENV_ID: tuner}
    else:
        settings = {}
    if token is not None:
        settings[ENV_TOKEN] = token
    elif os.environ.get(ENV_TOKEN):
        _check_token(os.environ[ENV_TOKEN], ENV_TOKEN)
    os.environ.update(settings)
    current = role()
    if current == "chief":
        chief_token()  # generated and printed now, before the data loads, if it is needed
    return current


def role() -> str | None:
    """ "chief", "worker" or None, from the KERASTUNER_* environment."""
    if ENV_IP not in os.environ:
        return None
    for name in (ENV_PORT, ENV_ID):
        if name not in os.environ:
            raise ZoobenchError(
                f"{ENV_IP} is set but {name} is not: set both (or use --chief/--worker)"
            )
    return "chief" if "chief" in os.environ[ENV_ID] else "worker"


@contextlib.contextmanager
def search_port(index: int):
    """Point KERASTUNER_ORACLE_PORT at PORT + ``index`` for the ``index``-th search of a run."""
    if role() is None:
        yield
        return
    base = os.environ.setdefault("ZOOBENCH_BASE_ORACLE_PORT", os.environ[ENV_PORT])
    os.environ[ENV_PORT] = str(int(base) + index)
    try:
        yield
    finally:
        os.environ[ENV_PORT] = base


@contextlib.contextmanager
def local_search():
    """Hide the KERASTUNER_* settings for the block: a search inside it runs in this process.

    Feature extraction's head search is seconds on cached features; in a distributed run it must
    not start Keras Tuner's own chief server (which has no token check and never stops).
    """
    saved = {
        name: os.environ.pop(name) for name in (ENV_ID, ENV_IP, ENV_PORT) if name in os.environ
    }
    try:
        yield
    finally:
        os.environ.update(saved)


# ---- the chief's token ---------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 in brackets or not) is this machine only."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve beyond this machine


def _check_token(token: str, source: str) -> str:
    if not token:
        raise ZoobenchError(f"{source}: the token is empty")
    if not (token.isascii() and token.isprintable()) or any(ch.isspace() for ch in token):
        raise ZoobenchError(f"{source}: a token is printable ASCII without spaces")
    return token


def chief_token() -> str | None:
    """The token the chief demands of its workers (None: any local process may call it).

    ``ZOOBENCH_TOKEN`` (which ``--token`` sets); when it is absent and the chief listens beyond
    loopback, a new one from ``secrets.token_urlsafe``, kept in ``ZOOBENCH_TOKEN`` (so every
    search of the run uses it) and printed to stderr this once.
    """
    token = os.environ.get(ENV_TOKEN) or None
    if token is not None:
        return _check_token(token, ENV_TOKEN)
    host = os.environ.get(ENV_IP, "127.0.0.1")
    if is_loopback(host):
        return None
    token = secrets.token_urlsafe(24)
    os.environ[ENV_TOKEN] = token
    print(
        f"zoobench: the chief listens on {host}, beyond loopback: start each worker with "
        f"--token {token} (or ZOOBENCH_TOKEN={token})",
        file=sys.stderr,
        flush=True,
    )
    return token


def worker_token() -> str | None:
    """The token this worker presents to the chief (``--token`` / ``ZOOBENCH_TOKEN``), if any."""
    token = os.environ.get(ENV_TOKEN) or None
    return _check_token(token, ENV_TOKEN) if token is not None else None


def refusal_message(address: str) -> str:
    """The worker's one line when the chief at ``address`` refuses its token."""
    return f"the chief at {address} refused this worker: {REFUSAL}"


def server_interceptors(token: str | None) -> list:
    """The chief server's interceptors: none without a token, else the token check."""
    if token is None:
        return []
    import grpc

    expected = f"Bearer {token}".encode()
    warned: set[str] = set()

    def refuse(request, context):
        host = context.peer().rpartition(":")[0]  # "ipv4:127.0.0.1:PORT": the port varies
        if host not in warned:  # one line per client host, not per call or connection
            warned.add(host)
            log.warning("chief: refused a call from %s: %s", host, REFUSAL)
        context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)

    refusal = grpc.unary_unary_rpc_method_handler(refuse)  # every oracle method is unary-unary

    class TokenCheck(grpc.ServerInterceptor):
        """Lets a call through only if its ``authorization`` metadata is "Bearer TOKEN"."""

        def intercept_service(self, continuation, handler_call_details):
            presented = ""
            for key, value in handler_call_details.invocation_metadata or ():
                if key == AUTH_METADATA and isinstance(value, str):
                    presented = value
            if hmac.compare_digest(presented.encode("utf-8", "replace"), expected):
                return continuation(handler_call_details)
            return refusal

    return [TokenCheck()]


def oracle_channel(address: str, token: str | None):
    """A gRPC channel to the chief at ``address`` whose calls carry ``token``; the chief's
    UNAUTHENTICATED refusal becomes a :class:`ZoobenchError` (:func:`refusal_message`)."""
    import collections

    import grpc

    fields = ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")

    class Details(collections.namedtuple("Details", fields), grpc.ClientCallDetails):
        pass

    class PresentToken(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, client_call_details, request):
            if token is not None:
                metadata = [
                    (k, v) for k, v in client_call_details.metadata or () if k != AUTH_METADATA
                ]
                metadata.append((AUTH_METADATA, f"Bearer {token}"))
                client_call_details = Details(
                    client_call_details.method,
                    client_call_details.timeout,
                    metadata,
                    client_call_details.credentials,
                    client_call_details.wait_for_ready,
                    client_call_details.compression,
                )
            outcome = continuation(client_call_details, request)
            if outcome.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise ZoobenchError(refusal_message(address))
            return outcome

    return grpc.intercept_channel(grpc.insecure_channel(address), PresentToken())
