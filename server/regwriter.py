"""The region database's registration writer: a thread that owns its own connection, so no registration, relayed
call or dialog publication (RFC 3903 entity-tag) is ever written on the signalling loop.

The driver hands it what changed (:meth:`RegistrationWriter.submit`: a mutex and a dict update, never a database
wait). The thread writes in one transaction; when the database refuses (another process holds it, disk full) the
batch is merged back under anything newer and retried with backoff (50 ms doubling to 2 s) until it commits, so a
locked database delays the books, never loses them and never stalls SIP. Memory stays bounded: pending changes are
keyed by binding (a newer change replaces an older one) and relayed calls are capped at ``MAX_PENDING_DIALOGS``
(the oldest go first: a lost one costs that call its relayed BYE after a restart, nothing else).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from server.db import open_region_db
from server.location import Binding
from server.proxy import DialogParties
from server.publish import Publication
from server.registrations import RegistrationStore

__all__ = ["MAX_PENDING_DIALOGS", "RegistrationWriter"]

log = logging.getLogger(__name__)

MAX_PENDING_DIALOGS = 100_000
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0

_Key = tuple[str, str]


class RegistrationWriter:
    """Writes registration changes and relayed calls to the region database on its own thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._changes: dict[_Key, Binding | None] = {}
        self._dialogs: list[tuple[str, DialogParties]] = []
        self._publications: dict[str, Publication | None] = {}
        self._wall_offset = 0.0
        self._wall_now = 0.0
        self._busy = False
        self._closing = False
        #: Rows written, and write attempts the database refused (each is retried).
        self.written = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="gamesdk-registration-writer", daemon=True)
        self._thread.start()

    def submit(self, changes: Mapping[_Key, Binding | None], dialogs: list[tuple[str, DialogParties]],
               wall_offset: float, wall_now: float,
               publications: Mapping[str, Publication | None] | None = None) -> int:
        """Queue a batch (``wall_offset`` = wall clock - loop clock); returns how many rows it holds."""
        publications = publications or {}
        if not changes and not dialogs and not publications:
            return 0
        with self._cond:
            self._changes.update(changes)
            self._publications.update(publications)
            self._dialogs.extend(dialogs)
            if len(self._dialogs) > MAX_PENDING_DIALOGS:
                del self._dialogs[: len(self._dialogs) - MAX_PENDING_DIALOGS]
            self._wall_offset = wall_offset
            self._wall_now = wall_now
            self._cond.notify()
        return len(changes) + len(dialogs) + len(publications)

    @property
    def pending(self) -> int:
        """Rows not written yet (queued or being written)."""
        with self._cond:
            return len(self._changes) + len(self._dialogs) + len(self._publications) + (1 if self._busy else 0)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait (off the loop, or at shutdown) until everything queued is written; False if still pending."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._has_work() or self._busy), timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Write what is queued (at most ``timeout_s``), then stop; False when something could not be written."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        with self._cond:
            left = len(self._changes) + len(self._dialogs) + len(self._publications)
        if left or self._thread.is_alive():
            log.error("registration writer: %d change(s) not written at shutdown (database unavailable)", left)
            return False
        return True

    def _has_work(self) -> bool:
        return bool(self._changes or self._dialogs or self._publications)

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        store: RegistrationStore | None = None
        delay = RETRY_FIRST_S
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._has_work() or self._closing)
                    if not self._has_work():
                        return  # closing, nothing left
                    changes, self._changes = self._changes, {}
                    dialogs, self._dialogs = self._dialogs, []
                    publications, self._publications = self._publications, {}
                    offset, wall_now = self._wall_offset, self._wall_now
                    self._busy = True
                try:
                    if store is None:
                        store = RegistrationStore(open_region_db(self.path))
                    store.apply(changes, offset)
                    store.save_dialogs(dialogs, offset, wall_now)
                    store.save_publications(publications, offset)
                except Exception as exc:  # noqa: BLE001 - whatever the fault, the batch is kept and retried
                    self.failures += 1
                    with self._cond:
                        # Newer changes of the same binding win; relayed calls keep their order.
                        changes.update(self._changes)
                        self._changes = changes
                        self._dialogs = dialogs + self._dialogs
                        publications.update(self._publications)
                        self._publications = publications
                        self._busy = False
                        self._cond.notify_all()
                        closing = self._closing
                    log.warning("registration writer: database refused %d change(s), retrying in %.2f s: %s",
                                len(changes) + len(dialogs), delay, exc)
                    if closing and delay >= RETRY_MAX_S:
                        return  # shutting down and the database stays unusable: close() reports what is left
                    with self._cond:
                        self._cond.wait(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = RETRY_FIRST_S
                with self._cond:
                    self.written += len(changes) + len(dialogs) + len(publications)
                    self._busy = False
                    self._cond.notify_all()
        finally:
            if store is not None:
                store.close()
