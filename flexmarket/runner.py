"""Start a whole flexmarket network as real processes on loopback (used by `flexmarket up`, `demo`,
the end-to-end tests and the benchmarks): registry, gateway, BAP, BPP (hosting the providers),
ledger, and a Celery worker (with embedded beat). Identities are created and registered with the
registry (operator path) before the processes start, so every process finds its keys.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from bap import auth as bap_auth
from bap.permissions import Role as ApiRole
from beckn.errors import Role
from beckn.identity import Identity, load_or_create_identity
from beckn.keys import load_or_create_keypair, public_key_b64
from bpp.catalog import network_config, parse_config
from flexmarket import lifeline
from kernel import clock, db
from kernel.config import environment, get_settings
from kernel.db import session_scope
from kernel.embedded import free_port_range
from ledger import api_keys as ledger_api_keys
from ledger import db as ledger_db
from ledger import meter_data as ledger_meter_data
from registry import service as registry_service

log = structlog.get_logger(__name__)
PARTICIPANTS = ("registry", "gateway", "bap", "bpp", "ledger")
GATEWAY_ID = "gateway.flexmarket.local"
BAP_ID = "grid-orchestrator.bap.flexmarket.local"
WORKER_RESTART_CHECK_S = 1.0  # how often the supervisor looks for exited workers
UP_AGGREGATOR_ID = "aggregator-1"  # the aggregator the manifest's aggregator key of the BAP client API acts for


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None
    popen: subprocess.Popen[bytes] | None = None
    halted: bool = False  # stopped on purpose (stop()): the supervisor leaves it down

    def start(self) -> None:
        self.halted = False
        if self.health_url is None:  # a worker's readiness is read from its log: start a fresh one
            self.log_path.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        # A session of its own (a terminal's Ctrl-C reaches only the runner, which stops the services in order),
        # and it dies with the runner even if the runner is SIGKILLed (flexmarket/lifeline.py).
        self.popen = subprocess.Popen(
            self.argv,
            env={**self.env, lifeline.PARENT_PID_ENV: str(os.getpid())},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lifeline.preexec_for_this_thread(),  # only prctl and getppid run in the child
        )
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        self.halted = True
        if not self.alive():
            return
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class Network:
    home: Path
    manifest: dict[str, Any]
    processes: dict[str, Process] = field(default_factory=dict)
    _supervisor: threading.Thread | None = field(default=None, init=False, repr=False)
    _closed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def url(self, name: str) -> str:
        return str(self.manifest["participants"][name]["base_url"])

    def start(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        for name in names or list(self.processes):
            self.processes[name].start()
        self.wait_healthy(names, timeout)
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
            self._supervisor.start()

    def _supervise(self) -> None:
        """Restart a Celery worker that exited without being stopped, as a deployment's supervisor would
        (docker-compose: `restart: unless-stopped`): Celery's consumer can die of an unrecoverable error when its
        broker goes away mid-task (kombu, restoring unacknowledged messages), and the outbox and inbox sweeps
        only help once a worker runs again. Web services are not restarted: their exit is reported."""
        while not self._closed.wait(WORKER_RESTART_CHECK_S):
            for name, p in list(self.processes.items()):
                if p.health_url is None and p.popen is not None and not p.halted and not p.alive():
                    log.warning("worker exited; restarting it", worker=name, code=p.popen.returncode)
                    p.start()

    def wait_healthy(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or list(self.processes):
            p = self.processes[name]
            while True:
                if not p.alive():
                    raise RuntimeError(f"{name} exited during start-up; see {p.log_path}:\n{tail(p.log_path)}")
                if p.health_url is None:
                    if _worker_ready(p.log_path):
                        break
                else:
                    try:
                        if httpx.get(p.health_url, timeout=1.0).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not healthy after {timeout:g} s; see {p.log_path}:\n{tail(p.log_path)}")
                time.sleep(0.1)

    def stop(self, names: list[str] | None = None, sig: int = signal.SIGTERM) -> None:
        if names is None:
            self._closed.set()
        # Stop the workers first so nothing sends to processes that are going away.
        order = names or sorted(self.processes, key=lambda n: not n.startswith("worker"))
        for name in order:
            if name in self.processes:
                self.processes[name].stop(sig)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _worker_ready(log_path: Path) -> bool:
    try:
        return " ready." in log_path.read_text(errors="replace")
    except OSError:
        return False


def register(identity: Identity, cities: list[str]) -> None:
    """Operator onboarding straight into the registry database (what `flexmarket registry add` does)."""
    with session_scope("registry") as s:
        registry_service.upsert(
            s,
            registry_service.NewSubscriber(
                subscriber_id=identity.subscriber_id,
                type=identity.role.value,
                url=identity.url,
                domain=identity.domain,
                cities=cities,
                country_code=identity.country_code,
                unique_key_id=identity.unique_key_id,
                signing_public_key=identity.keys.signing_public_key_b64,
                encr_public_key=identity.keys.encryption_public_key_b64,
            ),
            status="SUBSCRIBED",
        )


def _ledger_keys(bap_id: str, provider_ids: list[str], supplier_id: str, *, keys_dir: Path) -> dict[str, Any]:
    """A ledger API key per role for the manifest: admin, finance, the BAP's (with which it registers the orders
    it confirms), the host supplier's, one per provider (`providers`: provider id → key) and the meter operator's
    (`meter_operator`: the host supplier reads the meters; its API key, and the Ed25519 key pair file whose
    public key is registered with the ledger to sign readings — ledger/meter_data.py)."""
    key_file = keys_dir / "meter-operator.json"
    signing_key = load_or_create_keypair(key_file).signing_private_key

    def make(c: Any) -> dict[str, Any]:
        def key(role: str, participant: str | None = None) -> str:
            return ledger_api_keys.create_api_key(c, role, participant, "flexmarket up")

        registered = ledger_meter_data.list_keys(c, supplier_id)
        mine = next((k for k in registered if k.public_key_b64 == public_key_b64(signing_key)), None)
        if mine is None or mine.revoked_at is not None:  # a re-run of `flexmarket up` keeps the registered key
            mine = ledger_meter_data.register_keypair(c, supplier_id, signing_key, now=clock.now())
        return {
            "admin": key("admin"),
            "finance": key("finance"),
            "bap": key("bap", bap_id),
            "supplier": key("supplier", supplier_id),
            "providers": {pid: key("provider", pid) for pid in provider_ids},
            "meter_operator": {
                "participant_id": supplier_id,
                "api_key": key("meter_operator", supplier_id),
                "signing_key_id": mine.key_id,
                "key_file": str(key_file),
            },
        }

    with ledger_db.connection() as conn:
        keys: dict[str, Any] = ledger_db.in_transaction(conn, make)
    return keys


def _write_provider_keys(home: Path, keys: dict[str, str]) -> Path:
    """The providers' ledger keys for the BPP (FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE), readable by the owner only."""
    path = home / "keys" / "ledger-provider-keys.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f)
    os.chmod(path, 0o600)  # an existing file keeps its mode on open: make sure
    return path


def _bap_keys() -> dict[str, str]:
    """A BAP client API key per role for the manifest (bap/auth.py): operator, aggregator (for
    UP_AGGREGATOR_ID) and viewer. New keys on each run; earlier ones stay valid until revoked."""
    with session_scope("bap") as s:
        return {
            role.value: bap_auth.create_api_key(
                s,
                role,
                aggregator_id=UP_AGGREGATOR_ID if role is ApiRole.AGGREGATOR else None,
                label="flexmarket up",
            )
            for role in ApiRole
        }


@dataclass(frozen=True)
class OperatorAdds:
    """The network's operator enters each BPP platform in the registry (what `flexmarket registry add` does)."""


@dataclass(frozen=True)
class PlatformsSubscribe:
    """Each BPP platform onboards itself: at start-up the BPP POSTs every platform's subscription, signed with
    that platform's own keys, to the registry's `/subscribe` (FLEXMARKET_AUTO_SUBSCRIBE, beckn/onboarding.py),
    approved with the registry operator's token."""


Onboarding = OperatorAdds | PlatformsSubscribe


def own_bpp(
    net: Network, *, home: Path, database_url: str, providers_file: Path, name: str, env: dict[str, str] | None = None
) -> Network:
    """A BPP platform in processes of its own beside `net` (what a data centre running its own platform starts):
    a BPP web process and a worker, with their own database (migrated here), home and Celery queue, subscribing
    through `net`'s registry with their own keys at start-up. Not started; `name` tells the worker apart."""
    home.mkdir(parents=True, exist_ok=True)
    db.upgrade(database_url)
    port = free_port_range(1)
    shared = net.processes["bpp"].env
    own_env = {
        **shared,
        "DATABASE_URL": database_url,
        "FLEXMARKET_HOME": str(home),
        "FLEXMARKET_CELERY_QUEUE": f"{name}-{secrets.token_hex(4)}",
        "FLEXMARKET_PROVIDERS_FILE": str(providers_file),
        "FLEXMARKET_SUBSCRIBER_URL": f"http://127.0.0.1:{port}",
        "FLEXMARKET_AUTO_SUBSCRIBE": "true",
        "FLEXMARKET_REGISTRY_OPERATOR_TOKEN": shared.get("FLEXMARKET_REGISTRY_OPERATOR_TOKEN")
        or _self_subscription(Path(net.home))["FLEXMARKET_REGISTRY_OPERATOR_TOKEN"],
        **(env or {}),
    }
    for key in ("FLEXMARKET_BPP_ADMIN_TOKEN", "FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE", "FLEXMARKET_LEDGER_URL"):
        own_env.pop(key, None)  # its own platform: not the network BPP's admin token nor its providers' ledger keys
    py = sys.executable
    own = Network(home, {})
    own.processes["bpp"] = Process(
        "bpp",
        [py, "-m", "flexmarket", "serve", "bpp", "--host", "127.0.0.1", "--port", str(port)],
        {**own_env, "FLEXMARKET_PARTICIPANT": "bpp"},
        home / "bpp.log",
        f"http://127.0.0.1:{port}/health",
    )
    worker = [py, "-m", "flexmarket", "worker", "--participants", "bpp", "--concurrency", "2", "--hostname"]
    own.processes["worker"] = Process(
        "worker",
        [*worker, f"{name}@%h"],
        {**own_env, "FLEXMARKET_PARTICIPANT": "worker"},
        home / "worker.log",
        None,
    )
    return own


def _self_subscription(home: Path) -> dict[str, str]:
    """The BPP's environment for PlatformsSubscribe: subscribe at start-up, with the registry operator's token."""
    with environment({"FLEXMARKET_HOME": str(home)}):
        token = registry_service.operator_token()  # the network registry's (generated under its home)
    return {"FLEXMARKET_AUTO_SUBSCRIBE": "true", "FLEXMARKET_REGISTRY_OPERATOR_TOKEN": token}


def prepare_network(
    *,
    home: Path,
    base_port: int,
    providers: int = 3,
    platforms: int = 1,
    providers_file: Path | None = None,
    city_code: str = "GB-R13",
    worker_concurrency: int = 16,
    with_ledger: bool = True,
    extra_env: dict[str, str] | None = None,
    workers: dict[str, str] | None = None,
    onboarding: Onboarding = OperatorAdds(),
) -> Network:
    """Identities, registry entries, providers file and process definitions (nothing started yet).

    Needs DATABASE_URL and REDIS_URL in the environment (the CLI's ensure_services() sets them)."""
    settings = get_settings()
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    db.upgrade()
    ports = {name: base_port + i for i, name in enumerate(PARTICIPANTS)}
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    if providers_file is None:
        providers_file = home / "providers.json"
        providers_file.write_text(
            json.dumps(network_config(providers, platforms=platforms, city_code=city_code), indent=2)
        )
    config = parse_config(json.loads(providers_file.read_text()))

    gateway = load_or_create_identity(home, GATEWAY_ID, Role.BG, base["gateway"], city_code=city_code)
    bap = load_or_create_identity(home, BAP_ID, Role.BAP, f"{base['bap']}/beckn", city_code=city_code)
    register(gateway, ["*"])
    register(bap, [city_code])
    bpps = []
    for p in config:
        ident = load_or_create_identity(
            home,
            p.subscriber_id,
            Role.BPP,
            f"{base['bpp']}/{p.slug}",
            city_code=p.city_codes[0],
            country_code=p.country_code,
        )
        if isinstance(onboarding, OperatorAdds):
            register(ident, list(p.city_codes))
        bpps.append(
            {
                "subscriber_id": p.subscriber_id,
                "url": ident.url,
                "unique_key_id": ident.unique_key_id,
                "providers": [pr.id for pr in p.providers],
                "cities": list(p.city_codes),
            }
        )

    provider_ids = [pr.id for p in config for pr in p.providers]
    ledger_keys = (
        _ledger_keys(bap.subscriber_id, provider_ids, settings.default_supplier_id, keys_dir=home / "keys")
        if with_ledger
        else None
    )
    ledger_key = ledger_keys["bap"] if ledger_keys else None
    bap_keys = _bap_keys()
    # The BPP's admin API token (bpp/admin.py): the one configured, else a new one for this run.
    bpp_admin_token = settings.bpp_admin_token or secrets.token_urlsafe(32)
    provider_keys_file = _write_provider_keys(home, ledger_keys["providers"]) if ledger_keys else None
    common = {
        **os.environ,
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "FLEXMARKET_HOME": str(home),
        "FLEXMARKET_CELERY_QUEUE": settings.celery_queue,
        "FLEXMARKET_REGISTRY_URL": base["registry"],
        "FLEXMARKET_GATEWAY_URL": base["gateway"],
        # Without a ledger process there is nothing to register orders with (the BAP then skips it).
        **({"FLEXMARKET_LEDGER_URL": base["ledger"]} if with_ledger else {}),
        "FLEXMARKET_CITY": city_code,
        **({"FLEXMARKET_LEDGER_API_KEY": ledger_key} if ledger_key else {}),
        # The BPP reads its providers' settlement runs with their keys (bpp/outcomes.py); a worker reconciles
        # the books for this BAP (bap/reconcile.py).
        **({"FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE": str(provider_keys_file)} if provider_keys_file else {}),
        "FLEXMARKET_BAP_SUBSCRIBER_ID": bap.subscriber_id,
        **(extra_env or {}),
    }
    common.update(clock.pinned_env(common))  # one simulated clock for every process, if any
    py = sys.executable
    own = {
        "gateway": {"FLEXMARKET_SUBSCRIBER_ID": gateway.subscriber_id, "FLEXMARKET_SUBSCRIBER_URL": gateway.url},
        "bap": {"FLEXMARKET_SUBSCRIBER_ID": bap.subscriber_id, "FLEXMARKET_SUBSCRIBER_URL": bap.url},
        "bpp": {
            "FLEXMARKET_SUBSCRIBER_URL": base["bpp"],
            "FLEXMARKET_PROVIDERS_FILE": str(providers_file),
            "FLEXMARKET_BPP_ADMIN_TOKEN": bpp_admin_token,
            **(_self_subscription(home) if isinstance(onboarding, PlatformsSubscribe) else {}),
        },
    }
    net = Network(home, {})
    names = [n for n in PARTICIPANTS if with_ledger or n != "ledger"]
    for name in names:
        net.processes[name] = Process(
            name,
            [py, "-m", "flexmarket", "serve", name, "--host", "127.0.0.1", "--port", str(ports[name])],
            {**common, "FLEXMARKET_PARTICIPANT": name, **own.get(name, {})},
            logs / f"{name}.log",
            f"{base[name]}/health",
        )
    # One worker consuming every queue by default; `workers` splits them, e.g. {"worker": "registry,gateway,
    # bap,ledger", "worker-bpp": "bpp"} — the first one named also runs beat (only one process may).
    for i, (wname, queues) in enumerate((workers or {"worker": "all"}).items()):
        argv = [
            py,
            "-m",
            "flexmarket",
            "worker",
            "--participants",
            queues,
            "--concurrency",
            str(worker_concurrency),
            "--hostname",
            f"{wname}@%h",
        ]
        if i == 0:
            argv.append("--beat")
        # Workers re-plan the BPP's platforms (beat `bpp.replan`, bpp/replan.py): they read its providers file too.
        env = {**common, "FLEXMARKET_PARTICIPANT": wname, "FLEXMARKET_PROVIDERS_FILE": str(providers_file)}
        net.processes[wname] = Process(wname, argv, env, logs / f"{wname}.log", None)
    # The OpenADR VEN (bap/ven.py), exactly one per deployment, when a utility's VTN is configured: it hands
    # events to the BAP's grid-events endpoint with the operator key.
    if settings.openadr_vtn_url:
        env = {**common, "FLEXMARKET_VEN_BAP_URL": base["bap"], "FLEXMARKET_VEN_API_KEY": bap_keys["operator"]}
        net.processes["ven"] = Process("ven", [py, "-m", "flexmarket", "ven"], env, logs / "ven.log", None)
    net.manifest = {
        "home": str(home),
        "database_url": os.environ["DATABASE_URL"],
        "redis_url": os.environ["REDIS_URL"],
        "celery_queue": settings.celery_queue,
        "clock": clock.pinned_env(common) or {"kind": "wall"},
        "participants": {
            "registry": {"base_url": base["registry"]},
            "gateway": {
                "base_url": base["gateway"],
                "subscriber_id": gateway.subscriber_id,
                "unique_key_id": gateway.unique_key_id,
            },
            "bap": {
                "base_url": base["bap"],
                "subscriber_id": bap.subscriber_id,
                "url": bap.url,
                "unique_key_id": bap.unique_key_id,
                "api": f"{base['bap']}/api/v1",
                "docs": f"{base['bap']}/docs",
                # role → key (`Authorization: Bearer …`); the aggregator key acts for `aggregator_id`
                "api_keys": bap_keys,
                "aggregator_id": UP_AGGREGATOR_ID,
            },
            "bpp": {
                "base_url": base["bpp"],
                "platforms": bpps,
                "providers_file": str(providers_file),
                "admin": f"{base['bpp']}/admin",
                # `Authorization: Bearer …` for the admin API (`flexmarket provider join --token`)
                "admin_token": bpp_admin_token,
            },
            **(
                {"ledger": {"base_url": base["ledger"], "api": f"{base['ledger']}/api/v1", "api_keys": ledger_keys}}
                if with_ledger
                else {}
            ),
        },
        "logs": str(logs),
    }
    return net
