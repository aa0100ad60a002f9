"""Claims in a database with transactions: which worker measures which config, on the database's clock.

N workers on one sweep spec claim each config in the table ``mlflow_energy_claims`` (one row per
spec, config hash and hardware: holder, fencing token, state, lease expiry) and keep a lease in
``mlflow_energy_workers`` (one row per live sweep run). Each claim is one transaction: SQLite
``BEGIN IMMEDIATE``; PostgreSQL ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR UPDATE``.
A sweep settles a config and claims its next one in one transaction (:meth:`Coordinator.finish_and_claim`).
Leases are measured on the database's clock (``julianday('now')``, ``clock_timestamp()``), never a
worker's, and renewed every heartbeat by a thread of their own; a lease ends after ``STALE_AFTER``
heartbeats without renewal. Taking over an expired claim raises its fencing token: the worker that
lost it finds its token stale when it settles (:meth:`Coordinator.finish`) and tags its run
superseded. An error while asking the database is "unknown", never "dead": the caller retries later.

The database is the tracking store's own when the tracking URI is SQL (``sqlite:///``,
``postgresql://``), else the one named by ``--coordination-uri`` (``$MLFLOW_ENERGY_COORDINATION_URI``).
The tables' names never collide with MLflow's.

Example (a throw-away SQLite file):
    >>> import tempfile
    >>> url = f"sqlite:///{tempfile.mkdtemp()}/claims.db"
    >>> a, b = Coordinator(url, "exp/spec", "cpu", "run-a"), Coordinator(url, "exp/spec", "cpu", "run-b")
    >>> a.claim("ab12").state, b.claim("ab12").state, a.finish("ab12", 1), b.claim("ab12").state
    ('mine', 'held', True, 'done')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mlflow_energy.errors import ConfigError, MlflowEnergyError

__all__ = ["CLAIMS_TABLE", "COORDINATION_ENV", "WORKERS_TABLE", "Coordinator", "CoordinationUnavailable",
           "Verdict", "coordination_url", "end_dead_workers", "no_database_line", "reopen_settled"]

CLAIMS_TABLE = "mlflow_energy_claims"
WORKERS_TABLE = "mlflow_energy_workers"
COORDINATION_ENV = "MLFLOW_ENERGY_COORDINATION_URI"
_SQL = ("sqlite:", "postgresql:", "postgresql+", "postgres:")
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
T = TypeVar("T")


class CoordinationUnavailable(MlflowEnergyError):
    """The claims database did not answer: whether a claim is held is unknown (retry later)."""


@dataclass(frozen=True)
class Verdict:
    """A claim's state: ``mine`` (token is this worker's), ``held`` (a live holder), ``done`` or ``failed``;
    ``fenced``: this worker's lease was ended by another worker (it stops)."""

    state: str
    holder: str
    token: int


def coordination_url(tracking_uri: str, coordination_uri: str | None = None) -> str | None:
    """The claims database: ``coordination_uri`` if given, else the tracking URI when it is SQL, else None.

    Raises:
        ConfigError: a coordination URI that is not a database URL.
    """
    if coordination_uri:
        if not coordination_uri.startswith(_SQL):
            raise ConfigError("coordination_uri", coordination_uri,
                              "a database URL: postgresql://USER@HOST:PORT/DB or sqlite:///PATH.db")
        return coordination_uri
    return tracking_uri if tracking_uri.startswith(_SQL) else None


def no_database_line(tracking_uri: str) -> str:
    """The one line a sweep prints when no claims database is reachable: what the workers rely on."""
    return (f"no claims database (the tracking store {tracking_uri} is a server and no --coordination-uri "
            f"[${COORDINATION_ENV}] was given): workers rely on static shards (--shard I/N or --shard auto "
            "under a scheduler), each shard measured by the worker it is given to; two workers on one shard "
            "may measure a config twice")


def _unavailable(exc: BaseException) -> bool:
    from sqlalchemy import exc as sa

    return isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, sa.TimeoutError,
                            sa.InternalError)) or (isinstance(exc, sa.DBAPIError) and exc.connection_invalidated)


class Coordinator:
    """The claims of one spec (``spec_key``) on one hardware, held by the sweep run ``me``."""

    def __init__(self, url: str, spec_key: str, hardware: str, me: str, *, lease_s: float | None = None) -> None:
        from mlflow_energy.tracking.stale import STALE_AFTER, heartbeat_s

        self.url, self.spec, self.hardware, self.me = url, spec_key, hardware, me
        self.lease_s = lease_s if lease_s is not None else STALE_AFTER * heartbeat_s()
        self.engine = self._engine(url)
        self.pg = self.engine.dialect.name == "postgresql"
        self._now = ("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)" if self.pg
                     else "((julianday('now') - 2440587.5) * 86400.0)")
        self.ok_since: float | None = None  # monotonic time since when every renewal has reached the database
        self.last_ok = 0.0
        self.dropped = False  # this worker's lease row was removed by another worker: it is fenced
        self.joined = False  # once joined, each claim checks the lease row in its own transaction
        self.live: list[str] = []  # the live workers' sweep run ids, as of the last renewal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._call(self._create)

    @staticmethod
    def _engine(url: str) -> Any:
        from sqlalchemy import create_engine, event

        from mlflow_energy.tracking.retry import database_url

        url = database_url(url)
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _no_implicit(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # SQLAlchemy issues BEGIN itself (below)

            @event.listens_for(engine, "begin")
            def _immediate(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock first: no two claimers interleave

            return engine
        return create_engine(url, pool_pre_ping=True, connect_args={
            "connect_timeout": 5, "options": "-c lock_timeout=10000 -c statement_timeout=15000"})

    # ------------------------------------------------------------------ plumbing
    def _call(self, fn: Callable[[Any], T], what: str = "claiming a config") -> T:
        """``fn(conn)`` in one transaction, retried while the database is locked or away."""
        last: BaseException | None = None
        for delay in (0.0, *_BACKOFF_S):
            if delay:
                time.sleep(delay)
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except Exception as exc:
                from sqlalchemy import exc as sa

                if not _unavailable(exc) and not isinstance(exc, sa.IntegrityError):
                    raise
                last = exc
        text = " ".join(str(getattr(last, "orig", last)).split())[:200]
        raise CoordinationUnavailable(f"claims database unavailable while {what}: {type(last).__name__}: {text}")

    def _create(self, conn: Any) -> None:
        from sqlalchemy import text

        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {CLAIMS_TABLE} (spec VARCHAR(255) NOT NULL, "
                          "config_hash VARCHAR(64) NOT NULL, hardware VARCHAR(255) NOT NULL, "
                          "holder VARCHAR(64) NOT NULL, token INTEGER NOT NULL, state VARCHAR(16) NOT NULL, "
                          "lease_until DOUBLE PRECISION NOT NULL, PRIMARY KEY (spec, config_hash, hardware))"))
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {WORKERS_TABLE} (run_id VARCHAR(64) PRIMARY KEY, "
                          "spec VARCHAR(255) NOT NULL, hardware VARCHAR(255) NOT NULL, "
                          "lease_until DOUBLE PRECISION NOT NULL)"))

    def _key(self, config_hash: str) -> dict[str, Any]:
        return {"spec": self.spec, "h": config_hash, "hw": self.hardware, "me": self.me, "lease": self.lease_s}

    _WHERE = "spec = :spec AND config_hash = :h AND hardware = :hw"

    # ------------------------------------------------------------------ workers
    def now(self) -> float:
        """The database's clock, epoch seconds."""
        from sqlalchemy import text

        return float(self._call(lambda c: c.execute(text(f"SELECT {self._now}")).scalar(), "reading its clock"))

    def join(self) -> None:
        """Register this worker's lease and start renewing it (and its claims) every heartbeat."""
        from sqlalchemy import text

        def go(c: Any) -> None:
            c.execute(text(f"DELETE FROM {WORKERS_TABLE} WHERE run_id = :me"), {"me": self.me})
            c.execute(text(f"INSERT INTO {WORKERS_TABLE} (run_id, spec, hardware, lease_until) "
                           f"VALUES (:me, :spec, :hw, {self._now} + :lease)"), self._key(""))

        self._call(go, "joining the workers")
        self.joined = True
        self.ok_since = self.last_ok = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="mlflow-energy-lease", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        """Extend this worker's lease and its held claims; note the live workers."""
        from sqlalchemy import text

        def go(c: Any) -> tuple[int, list[str]]:
            n = c.execute(text(f"UPDATE {WORKERS_TABLE} SET lease_until = {self._now} + :lease WHERE run_id = :me"),
                          self._key("")).rowcount
            c.execute(text(f"UPDATE {CLAIMS_TABLE} SET lease_until = {self._now} + :lease WHERE spec = :spec "
                           "AND hardware = :hw AND holder = :me AND state = 'held'"), self._key(""))
            live = c.execute(text(f"SELECT run_id FROM {WORKERS_TABLE} WHERE spec = :spec AND hardware = :hw "
                                  f"AND lease_until > {self._now}"), self._key("")).scalars().all()
            return n, sorted(live)

        try:
            n, live = self._call(go, "renewing the lease")
        except Exception:  # unknown: the next beat tries again; others judge nobody until they are steady
            self.ok_since = None
            return
        self.dropped = self.dropped or n == 0
        self.live = live
        self.last_ok = time.monotonic()
        if self.ok_since is None:
            self.ok_since = self.last_ok

    def steady(self) -> bool:
        """True when this worker's renewals have reached the database for a whole lease.

        Only then may it take over an expired claim or end a worker whose lease ran out: right
        after the database was away every lease has run out, the live workers' too.
        """
        from mlflow_energy.tracking.stale import heartbeat_s

        now = time.monotonic()
        return (self.ok_since is not None and now - self.ok_since > self.lease_s
                and now - self.last_ok < 2 * heartbeat_s())

    def _loop(self) -> None:
        from mlflow_energy.tracking.stale import heartbeat_s

        while not self._stop.wait(heartbeat_s()):
            self.renew()

    def workers(self) -> tuple[float, dict[str, float]]:
        """``(database now, {sweep run id: lease expiry})`` of the workers on this spec and hardware."""
        from sqlalchemy import text

        def go(c: Any) -> tuple[float, dict[str, float]]:
            now = float(c.execute(text(f"SELECT {self._now}")).scalar())
            rows = c.execute(text(f"SELECT run_id, lease_until FROM {WORKERS_TABLE} WHERE spec = :spec "
                                  "AND hardware = :hw"), self._key("")).all()
            return now, {r[0]: float(r[1]) for r in rows}

        return self._call(go, "listing the workers")

    def release_worker(self, run_id: str) -> None:
        """A worker found dead: its held claims become free, its lease row goes (it is fenced)."""
        from sqlalchemy import text

        def go(c: Any) -> None:
            c.execute(text(f"UPDATE {CLAIMS_TABLE} SET state = 'free', lease_until = 0 WHERE spec = :spec "
                           "AND hardware = :hw AND holder = :who AND state = 'held'"), {**self._key(""), "who": run_id})
            c.execute(text(f"DELETE FROM {WORKERS_TABLE} WHERE run_id = :who"), {"who": run_id})

        self._call(go, "releasing a dead worker's claims")

    def alive(self) -> bool:
        """True while this worker's lease row is in the database (another worker that ended it as dead
        removed it: it is fenced, :attr:`dropped`). One read; raises :class:`CoordinationUnavailable`."""
        here = self._call(self._lease_row, "checking this worker's lease")
        self.dropped = self.dropped or not here
        return not self.dropped

    def _lease_row(self, c: Any) -> bool:
        """Whether this worker's lease row is in the database (inside the caller's transaction)."""
        from sqlalchemy import text

        return bool(c.execute(text(f"SELECT COUNT(*) FROM {WORKERS_TABLE} WHERE run_id = :me"), {"me": self.me}).scalar())

    def leave(self) -> None:
        """Stop renewing; free this worker's held claims and drop its lease (it ended)."""
        self._stop.set()
        self.release_worker(self.me)

    # ------------------------------------------------------------------ claims
    def claim(self, config_hash: str, *, take_expired: bool = True) -> Verdict:
        """Claim ``config_hash`` in one transaction; an expired claim is taken with the next token.

        ``take_expired=False`` (this worker is not steady yet): an expired claim counts as held.
        Once :meth:`join` ed, a worker whose lease row is gone (ended as dead by another) gets
        ``fenced`` and claims nothing: checked in the same transaction, no extra round trip.
        """
        verdict = self._call(lambda c: self._claim_in(c, config_hash, take_expired))
        self.dropped = self.dropped or verdict.state == "fenced"
        return verdict

    def finish_and_claim(self, config_hash: str, token: int, next_hash: str, *, take_expired: bool = True
                         ) -> tuple[bool, Verdict]:
        """:meth:`finish` this claim ``done`` and :meth:`claim` the next config in one transaction (one
        commit instead of two: a sweep settles a config and claims the next one back to back)."""
        current, verdict = self._call(lambda c: (self._finish_in(c, config_hash, token, "done"),
                                                 self._claim_in(c, next_hash, take_expired)), "settling a claim")
        self.dropped = self.dropped or verdict.state == "fenced"
        return current, verdict

    def _claim_in(self, c: Any, config_hash: str, take_expired: bool) -> Verdict:
        from sqlalchemy import text

        k = self._key(config_hash)
        if self.joined and not self._lease_row(c):
            return Verdict("fenced", "", 0)
        c.execute(text(f"INSERT INTO {CLAIMS_TABLE} (spec, config_hash, hardware, holder, token, state, "
                       "lease_until) VALUES (:spec, :h, :hw, '', 0, 'free', 0) ON CONFLICT DO NOTHING"), k)
        lock = " FOR UPDATE" if self.pg else ""
        holder, token, state, until, now = c.execute(text(
            f"SELECT holder, token, state, lease_until, {self._now} FROM {CLAIMS_TABLE} WHERE {self._WHERE}{lock}"
        ), k).one()
        if state in ("done", "failed"):
            return Verdict(state, holder, token)
        if state == "held" and holder != self.me and (until > now or not take_expired):
            return Verdict("held", holder, token)
        if not (state == "held" and holder == self.me):
            token += 1  # a free or expired claim: the next token fences the one before
        c.execute(text(f"UPDATE {CLAIMS_TABLE} SET holder = :me, token = :t, state = 'held', "
                       f"lease_until = {self._now} + :lease WHERE {self._WHERE}"), {**k, "t": token})
        return Verdict("mine", self.me, token)

    def finish(self, config_hash: str, token: int, state: str = "done") -> bool:
        """Settle this worker's claim as ``done`` (or ``failed``) if its token is still the current one.

        False: the claim was taken over meanwhile (this worker's result is superseded).
        """
        return self._call(lambda c: self._finish_in(c, config_hash, token, state), "settling a claim")

    def _finish_in(self, c: Any, config_hash: str, token: int, state: str) -> bool:
        from sqlalchemy import text

        return c.execute(text(f"UPDATE {CLAIMS_TABLE} SET state = :st, lease_until = 0 WHERE {self._WHERE} "
                              "AND holder = :me AND token = :t"),
                         {**self._key(config_hash), "st": state, "t": token}).rowcount == 1

    def closed(self) -> list[tuple[str, str, str, int]]:
        """``(config hash, state, holder, token)`` of the claims settled ``done`` or ``failed``."""
        from sqlalchemy import text

        return self._call(lambda c: [tuple(r) for r in c.execute(text(
            f"SELECT config_hash, state, holder, token FROM {CLAIMS_TABLE} WHERE spec = :spec AND hardware = :hw "
            "AND state IN ('done', 'failed')"), self._key("")).all()], "reading the claims")

    def reopen(self, config_hash: str, token: int) -> bool:
        """Free a settled claim (its run was deleted, or it failed in an earlier sweep), if unchanged."""
        from sqlalchemy import text

        return self._call(lambda c: c.execute(text(
            f"UPDATE {CLAIMS_TABLE} SET state = 'free', lease_until = 0 WHERE {self._WHERE} AND token = :t "
            "AND state IN ('done', 'failed')"), {**self._key(config_hash), "t": token}).rowcount == 1, "reopening a claim")

    def close(self) -> None:
        self._stop.set()
        self.engine.dispose()


def end_dead_workers(coord: Coordinator, exp_id: str, spec_name: str, *, by_lease: bool = True) -> list[str]:
    """End the RUNNING sweep runs of ``spec_name`` on the coordinator's hardware whose worker is dead.

    Dead: its process is gone (same host), or (``by_lease``) its lease ran out on the database's clock;
    a run whose worker never joined (killed right after starting) after ten leases. Each is ended
    KILLED (fenced: on resuming it stops), its claims freed, its RUNNING children ended. Returns the
    ended run ids.
    """
    from mlflow_energy import schema
    from mlflow_energy.tracking.filters import exact, tag_equals
    from mlflow_energy.tracking.read import _search
    from mlflow_energy.tracking.stale import end_orphans, end_stale, process_gone

    filt = (f"attributes.status = 'RUNNING' and tags.`{schema.T_KIND}` = '{schema.KIND_SWEEP}' and "
            f"{tag_equals(schema.T_SWEEP_SPEC, spec_name)}")
    running = [r for r in exact(_search([exp_id], filt), schema.T_SWEEP_SPEC, spec_name)
               if r.info.run_id != coord.me and r.data.tags.get(schema.T_HARDWARE) == coord.hardware]
    if not running:
        return []
    now, leases = coord.workers()
    grace = max(10 * coord.lease_s, 120.0)
    ended: list[str] = []
    for r in running:
        lease = leases.get(r.info.run_id)
        if process_gone(r.data.tags) or by_lease and (
                lease < now if lease is not None else now - (r.info.start_time or 0) / 1000.0 > grace):
            end_stale(r, by=coord.me)
            coord.release_worker(r.info.run_id)
            ended += [r.info.run_id, *end_orphans(exp_id, r.info.run_id)]
    return ended


def reopen_settled(coord: Coordinator, finished: Callable[[], set[str]]) -> None:
    """Free the claims settled ``done`` whose run is gone (deleted): not among ``finished()`` (the
    FINISHED config hashes, read after the claims), and those settled ``failed`` by a worker no
    longer live (an earlier sweep)."""
    closed = coord.closed()
    done = finished() if any(state == "done" for _, state, _, _ in closed) else set()
    for h, state, holder, token in closed:
        if (state == "done" and h not in done) or (state == "failed" and holder not in coord.live):
            coord.reopen(h, token)
