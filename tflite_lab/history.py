"""Run history: every conversion (CLI convert/matrix/debug, dashboard) kept in one SQLite database.

``history.sqlite`` lives in the data directory (``config.home_dir()``), beside the store. The database
is in WAL mode with a busy timeout, so several Streamlit sessions and CLI processes can write at
once; each write is one short ``BEGIN IMMEDIATE`` transaction. The schema is versioned
(``PRAGMA user_version``) and migrated in place. A file this code cannot read (not SQLite, damaged,
someone else's tables, a newer schema) is refused with its path and never touched.

A run is one row in ``runs`` (the columns the History page filters and sorts on, plus a JSON
``data`` blob), its judged cell reports in ``run_reports`` (one for convert, every cell for a
matrix) and its store files in ``artifacts`` (so deleting a run removes only files no other run uses).
Each run has an author (``people.Person``: email, name, subject; none for runs from before sign-in) and
any number of ``reviews``. Deleting moves a run to the trash (``deleted_at``); its files go only when
an admin empties the trash. Every change takes an ``people.Actor`` and checks ``people.check_change`` /
``check_admin`` inside its write transaction, so the rule holds whatever a page showed.
Nothing here imports TensorFlow: versions are read from package metadata.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import secrets
import sqlite3
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .config import cache_dir, home_dir
from .errors import HistoryError, wrapped
from .people import Actor, Person, check_admin, check_change, check_review

SCHEMA_VERSION = 5
DB_NAME = "history.sqlite"
ID_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"    # URL-safe, no look-alikes, never starts with '-'
ID_LENGTH = 8
VERDICTS = ("pass", "fail", "ran, no reference", "error")
SORTS = {"time": "created_at", "model": "model_name", "verdict": "verdict", "recipe": "recipe",
         "size": "tflite_bytes", "max abs error": "max_abs_sort", "latency": "latency_ms"}
_SUMMARY_COLUMNS = ("id", "created_at", "kind", "origin", "model_name", "model_sha256", "route", "recipe",
                    "verdict", "samples_desc", "samples_sha256", "original_bytes", "tflite_bytes", "latency_ms",
                    "summary", "note", "parent_run", "author_email", "author_name", "author_sub", "deleted_at",
                    "deleted_by")
BEFORE_SIGN_IN = "(before sign-in)"     # the author filter's value for runs recorded without one
REVIEW_STATES = ("awaiting review", "approved", "changes requested", "approved by me")


def history_path() -> Path:
    return home_dir() / DB_NAME


# ---- schema ----

# version -> the statements that reach it from the version before (never edit a released step: add one).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, created_at REAL NOT NULL, kind TEXT NOT NULL, origin TEXT NOT NULL,
            model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL, route TEXT, recipe TEXT, verdict TEXT NOT NULL,
            samples_desc TEXT, samples_sha256 TEXT, original_bytes INTEGER, tflite_bytes INTEGER,
            latency_ms REAL, max_abs_sort REAL, summary TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL)""",
        """CREATE TABLE run_reports (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, position INTEGER NOT NULL,
            cell TEXT NOT NULL, report TEXT NOT NULL, PRIMARY KEY (run_id, position))""",
        """CREATE TABLE artifacts (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, kind TEXT NOT NULL, path TEXT NOT NULL)""",
        "CREATE INDEX artifacts_path ON artifacts(path)",
    ),
    # Reviewer tags, and indexes so the History page pages 10,000 runs in SQL.
    2: (
        "ALTER TABLE runs ADD COLUMN reviewer TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX runs_created ON runs(created_at)",
        "CREATE INDEX runs_model ON runs(model_name, created_at)",
        "CREATE INDEX runs_verdict ON runs(verdict, created_at)",
        "CREATE INDEX runs_recipe ON runs(recipe, created_at)",
    ),
    # The JSON blob out of the row the History page scans: columns stored after it (reviewer) were
    # read through its overflow pages, so a note search over 10,000 runs read the whole file.
    3: (
        "CREATE TABLE run_data (run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE, data TEXT NOT NULL)",
        "INSERT INTO run_data (run_id, data) SELECT id, data FROM runs",
        "ALTER TABLE runs DROP COLUMN data",
    ),
    # Device runs (a cell run in a visitor's browser) point at the run of the cell they ran.
    4: (
        "ALTER TABLE runs ADD COLUMN parent_run TEXT",
        "CREATE INDEX runs_parent ON runs(parent_run, created_at)",
    ),
    # Teams: who made each run (old runs: nobody, "before sign-in"), reviews by signed-in people instead of
    # a free-text tag (each tag becomes a review by its stated name), and a trash (deleted_at) an admin empties.
    5: (
        "ALTER TABLE runs ADD COLUMN author_email TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN author_name TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN author_sub TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN deleted_at REAL",
        "ALTER TABLE runs ADD COLUMN deleted_by TEXT",
        """CREATE TABLE reviews (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            created_at REAL NOT NULL, verdict TEXT NOT NULL, text TEXT NOT NULL DEFAULT '',
            author_email TEXT NOT NULL DEFAULT '', author_name TEXT NOT NULL DEFAULT '',
            author_sub TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX reviews_run ON reviews(run_id, created_at)",
        "INSERT INTO reviews (run_id, created_at, verdict, text, author_name) SELECT id, created_at, 'comment', "
        "'(reviewer tag from before sign-in)', reviewer FROM runs WHERE reviewer != ''",
        "ALTER TABLE runs DROP COLUMN reviewer",
        "CREATE INDEX runs_author ON runs(author_email, created_at)",
        "CREATE INDEX runs_deleted ON runs(deleted_at, created_at)",
    ),
}


# ---- the database ----

@dataclass(frozen=True)
class RunFilter:
    """What the History page and ``history`` CLI filter on; None means any."""

    model: str | None = None
    verdict: str | None = None
    recipe: str | None = None
    since: float | None = None        # unix seconds, inclusive
    until: float | None = None        # unix seconds, exclusive
    search: str | None = None         # substring of the note, a review or the author (case-insensitive)
    author: str | None = None         # an author's email or name, or BEFORE_SIGN_IN
    review: str | None = None         # one of REVIEW_STATES ("approved by me": by ``me``)
    me: Person | None = None
    trash: bool = False               # the trash instead of the history

    def where(self) -> tuple[str, list]:
        sql, args = ["deleted_at IS NOT NULL" if self.trash else "deleted_at IS NULL"], []
        for column, value in (("model_name", self.model), ("verdict", self.verdict), ("recipe", self.recipe)):
            if value:
                sql.append(f"{column} = ?")
                args.append(value)
        if self.since is not None:
            sql.append("created_at >= ?")
            args.append(self.since)
        if self.until is not None:
            sql.append("created_at < ?")
            args.append(self.until)
        if self.author == BEFORE_SIGN_IN:
            sql.append("author_email = '' AND author_name = '' AND author_sub = ''")
        elif self.author:
            sql.append("(lower(author_email) = lower(?) OR (author_email = '' AND author_name = ?))")
            args += [self.author, self.author]
        if self.review == "awaiting review":      # nobody approved or asked for changes yet
            sql.append("NOT EXISTS (SELECT 1 FROM reviews v WHERE v.run_id = runs.id AND v.verdict != 'comment')")
        elif self.review in ("approved", "changes requested"):
            sql.append("EXISTS (SELECT 1 FROM reviews v WHERE v.run_id = runs.id AND v.verdict = ?)")
            args.append(self.review)
        elif self.review == "approved by me":
            me = self.me or Person()
            sql.append("EXISTS (SELECT 1 FROM reviews v WHERE v.run_id = runs.id AND v.verdict = 'approved' AND "
                       "((? != '' AND v.author_sub = ?) OR (? != '' AND lower(v.author_email) = lower(?))))")
            args += [me.subject, me.subject, me.email, me.email]
        if self.search:
            sql.append("(note LIKE ? ESCAPE '\\' OR author_name LIKE ? ESCAPE '\\' OR author_email LIKE ? ESCAPE '\\'"
                       " OR EXISTS (SELECT 1 FROM reviews v WHERE v.run_id = runs.id AND"
                       " (v.text LIKE ? ESCAPE '\\' OR v.author_name LIKE ? ESCAPE '\\')))")
            like = "%" + self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [like] * 5
        return " WHERE " + " AND ".join(sql), args


class History:
    """The run history database. One instance per thread (sqlite3 connections are not shared).

    Raises:
        HistoryError: the file is not a history this version can read; it is left untouched.
    """

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 30.0,
                 schema_version: int = SCHEMA_VERSION):
        self.path = Path(path) if path else history_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        except sqlite3.Error as e:
            raise self._refuse(e) from None
        self.db.row_factory = sqlite3.Row
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._open(timeout_s, schema_version)
                return
            except sqlite3.OperationalError as e:
                # Another process creating the file or switching it to WAL: busy, not unreadable.
                if _busy(e) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                self.db.close()
                raise (HistoryError(wrapped(f"The run history {self.path} stayed locked for {timeout_s:.0f} s (", e, ")."))
                       if _busy(e) else self._refuse(e)) from None
            except sqlite3.DatabaseError as e:
                self.db.close()
                raise self._refuse(e) from None
            except HistoryError:
                self.db.close()
                raise

    def _open(self, timeout_s: float, schema_version: int) -> None:
        self._check()
        self.db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        self.db.execute("PRAGMA foreign_keys = ON")
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")      # WAL: durable at checkpoints, never corrupt
        # schema_version below the current one exists for the migration tests (an old database).
        if self.db.execute("PRAGMA user_version").fetchone()[0] < schema_version:
            self._migrate(schema_version)

    def _refuse(self, why) -> HistoryError:
        return HistoryError(f"The run history {self.path} cannot be read ({why}); it was left untouched. Move it "
                            "away to start a new history, set TFLITE_LAB_HOME, or pass --no-history.")

    def _check(self) -> None:
        """Read-only checks before anything is written: a foreign or damaged file fails here."""
        self.db.execute("BEGIN")          # one snapshot: another process may be creating the schema right now
        try:
            v = self.db.execute("PRAGMA user_version").fetchone()[0]       # 'file is not a database' here
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            self.db.execute("COMMIT")
        if v > SCHEMA_VERSION:
            raise self._refuse(f"schema version {v} is newer than this tflite_lab's {SCHEMA_VERSION}")
        if v == 0 and tables:
            raise self._refuse(f"it holds other tables ({', '.join(sorted(tables))}), not a run history")
        needed = {"runs", "run_reports", "artifacts"} | ({"run_data"} if v >= 3 else set())
        needed |= {"reviews"} if v >= 5 else set()
        if v > 0 and not needed <= tables:
            raise self._refuse(f"schema version {v} but tables are missing ({', '.join(sorted(tables)) or 'none'})")

    def _migrate(self, target: int) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            current = self.db.execute("PRAGMA user_version").fetchone()[0]   # another process may have done it
            for v in range(current + 1, target + 1):
                for stmt in MIGRATIONS[v]:
                    self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {v}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _q(self, sql: str, args=()) -> list[sqlite3.Row]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._refuse(e) from None

    # ---- writing ----

    def record(self, run: dict) -> str:
        """Store a run (see ``build_run``); returns its new id."""
        reports = run.get("reports", [])
        data = {k: v for k, v in run.items() if k not in ("reports", "artifacts", "author", "reviews",
                                                           *_SUMMARY_COLUMNS)}
        summary = run.get("summary") or {}
        author = Person.from_json(run.get("author")) or Person()
        for _ in range(20):
            run_id = new_run_id()
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as e:
                raise self._refuse(e) from None
            try:
                self.db.execute(
                    "INSERT INTO runs (id, created_at, kind, origin, model_name, model_sha256, route, recipe, verdict,"
                    " samples_desc, samples_sha256, original_bytes, tflite_bytes, latency_ms, max_abs_sort, summary,"
                    " note, parent_run, author_email, author_name, author_sub)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run_id, run.get("created_at") or time.time(), run["kind"], run.get("origin", "cli"),
                     run["model"]["filename"], run["model"]["sha256"], run.get("route"), run.get("recipe"),
                     run["verdict"], run["samples"].get("description"), run["samples"].get("sha256"),
                     run.get("original_bytes"), run.get("tflite_bytes"), _real(summary.get("latency_ms")),
                     _sort_key(summary.get("max_abs_error")), _dumps(summary), run.get("note", ""),
                     run.get("parent_run"), author.email, author.name, author.subject))
                self.db.execute("INSERT INTO run_data (run_id, data) VALUES (?, ?)", (run_id, _dumps(data)))
            except sqlite3.IntegrityError:
                self.db.execute("ROLLBACK")
                continue            # the 1 in 10^12 id collision: draw again
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            try:
                self.db.executemany("INSERT INTO run_reports (run_id, position, cell, report) VALUES (?,?,?,?)",
                                    [(run_id, i, r.get("cell") or cell_name(r), _dumps(_slim(r)))
                                     for i, r in enumerate(reports)])
                self.db.executemany("INSERT INTO artifacts (run_id, kind, path) VALUES (?,?,?)",
                                    [(run_id, kind, str(p)) for kind, p in _artifact_rows(run.get("artifacts", {}))])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return run_id
        raise HistoryError("Could not draw an unused run id after 20 tries.")

    def _write(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise self._refuse(e) from None

    def _author_of(self, run_id: str, *, trash: bool = False) -> Person | None | bool:
        """The run's author inside a write transaction; False when there is no such run (in the trash: ``trash``)."""
        row = self.db.execute("SELECT author_email, author_name, author_sub FROM runs WHERE id = ? AND "
                              f"deleted_at IS {'NOT ' if trash else ''}NULL", (run_id,)).fetchone()
        return False if row is None else Person.from_json(
            {"email": row[0], "name": row[1], "subject": row[2]})

    def update(self, run_id: str, *, actor: Actor, note: str | None = None) -> bool:
        """Edit a run's note; False when there is no such run.

        Raises:
            PermissionDenied: ``actor`` is neither the run's author nor an admin (logged, nothing written).
        """
        self._write()
        try:
            author = self._author_of(run_id)
            if author is False:
                self.db.execute("ROLLBACK")
                return False
            check_change(actor, author, f"run {run_id}'s note")
            if note is not None:
                self.db.execute("UPDATE runs SET note = ? WHERE id = ?", (note, run_id))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return True

    def delete(self, run_id: str, *, actor: Actor) -> bool:
        """Move a run to the trash (its files stay until the trash is emptied); False when there is no such run.

        Raises:
            PermissionDenied: ``actor`` is neither the run's author nor an admin (logged, nothing written).
        """
        self._write()
        try:
            author = self._author_of(run_id)
            if author is False:
                self.db.execute("ROLLBACK")
                return False
            check_change(actor, author, f"run {run_id}")
            self.db.execute("UPDATE runs SET deleted_at = ?, deleted_by = ? WHERE id = ?",
                            (time.time(), actor.label, run_id))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return True

    def restore(self, run_id: str, *, actor: Actor) -> bool:
        """Bring a run back from the trash (admins only); False when it is not in the trash."""
        check_admin(actor, f"restore run {run_id} from the trash")
        try:
            cur = self.db.execute("UPDATE runs SET deleted_at = NULL, deleted_by = NULL WHERE id = ? AND "
                                  "deleted_at IS NOT NULL", (run_id,))
        except sqlite3.DatabaseError as e:
            raise self._refuse(e) from None
        return cur.rowcount == 1

    def empty_trash(self, *, actor: Actor, run_ids: list[str] | None = None,
                    store_root: str | Path | None = None) -> tuple[list[str], list[str]]:
        """Delete runs in the trash for good (all, or ``run_ids``) with the store files no other run uses.

        Admins only. Only files inside the store are ever removed. Returns (run ids, removed paths).
        """
        check_admin(actor, "empty the trash")
        root = Path(store_root or cache_dir()).resolve()
        self._write()
        try:
            ids = [r[0] for r in self.db.execute("SELECT id FROM runs WHERE deleted_at IS NOT NULL")]
            if run_ids is not None:
                ids = [i for i in ids if i in set(run_ids)]
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS purge (id TEXT PRIMARY KEY)")
            self.db.execute("DELETE FROM purge")
            self.db.executemany("INSERT INTO purge VALUES (?)", [(i,) for i in ids])
            paths = [r[0] for r in self.db.execute(
                "SELECT DISTINCT path FROM artifacts a WHERE run_id IN (SELECT id FROM purge) AND NOT EXISTS "
                "(SELECT 1 FROM artifacts b WHERE b.path = a.path AND b.run_id NOT IN (SELECT id FROM purge))")]
            for table, column in (("artifacts", "run_id"), ("run_reports", "run_id"), ("reviews", "run_id"),
                                  ("run_data", "run_id"), ("runs", "id")):
                self.db.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT id FROM purge)")
            self.db.execute("DELETE FROM purge")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        removed = []
        for p in paths:
            for f in _with_siblings(Path(p)):
                try:
                    if f.resolve().is_relative_to(root) and f.is_file():
                        f.unlink()
                        removed.append(str(f))
                except OSError:
                    pass
        return ids, removed

    def add_review(self, run_id: str, *, actor: Actor, verdict: str, text: str = "") -> int | None:
        """A signed-in person's review of a run (anyone may review); its id, None when there is no such run."""
        check_review(actor, verdict)
        p = actor.person
        self._write()
        try:
            if self._author_of(run_id) is False:
                self.db.execute("ROLLBACK")
                return None
            cur = self.db.execute(
                "INSERT INTO reviews (run_id, created_at, verdict, text, author_email, author_name, author_sub)"
                " VALUES (?,?,?,?,?,?,?)", (run_id, time.time(), verdict, text, p.email, p.name, p.subject))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return cur.lastrowid

    def update_review(self, review_id: int, *, actor: Actor, verdict: str, text: str) -> bool:
        """Change a review's verdict and text (its author or an admin); False when there is no such review."""
        check_review(actor, verdict)
        return self._change_review(review_id, actor, "UPDATE reviews SET verdict = ?, text = ? WHERE id = ?",
                                   (verdict, text, int(review_id)))

    def delete_review(self, review_id: int, *, actor: Actor) -> bool:
        """Delete a review (its author or an admin); False when there is no such review."""
        return self._change_review(review_id, actor, "DELETE FROM reviews WHERE id = ?", (int(review_id),))

    def _change_review(self, review_id: int, actor: Actor, sql: str, args: tuple) -> bool:
        self._write()
        try:
            row = self.db.execute("SELECT run_id, author_email, author_name, author_sub FROM reviews WHERE id = ?",
                                  (int(review_id),)).fetchone()
            if row is None:
                self.db.execute("ROLLBACK")
                return False
            check_change(actor, Person.from_json({"email": row[1], "name": row[2], "subject": row[3]}),
                         f"a review of run {row[0]}")
            self.db.execute(sql, args)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return True

    # ---- reading ----

    def count(self, flt: RunFilter = RunFilter()) -> int:
        where, args = flt.where()
        return self._q(f"SELECT COUNT(*) FROM runs{where}", args)[0][0]

    def runs(self, flt: RunFilter = RunFilter(), *, sort: str = "time", descending: bool = True,
             limit: int = 50, offset: int = 0) -> list[dict]:
        """One page of run summaries (no reports), filtered and sorted in SQL."""
        where, args = flt.where()
        column = SORTS.get(sort, "created_at")
        order = "DESC" if descending else "ASC"
        # Missing values last whatever the direction; time is never missing, so its index serves the sort.
        nulls = "" if column == "created_at" else f"{column} IS NULL, "
        rows = self._q(f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM runs{where} "
                       f"ORDER BY {nulls}{column} {order}, id LIMIT ? OFFSET ?", (*args, int(limit), int(offset)))
        return [_summary_row(r) for r in rows]

    def runs_by_id(self, ids: list[str]) -> list[dict | None]:
        """Summaries of these runs, in this order (None for an id not in the history)."""
        if not ids:
            return []
        rows = self._q(f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM runs WHERE deleted_at IS NULL AND "
                       f"id IN ({','.join('?' * len(ids))})", list(ids))
        by_id = {r["id"]: _summary_row(r) for r in rows}
        return [by_id.get(i) for i in ids]

    def get(self, run_id: str, *, reports: bool = True, trash: bool = False) -> dict | None:
        """The whole run: its columns, data, reports (judged cell reports), artifacts and reviews.

        A run in the trash is not found, unless ``trash`` (then only runs in the trash are).
        """
        rows = self._q(f"SELECT {', '.join('r.' + c for c in _SUMMARY_COLUMNS)}, d.data FROM runs r "
                       "JOIN run_data d ON d.run_id = r.id WHERE r.id = ? AND "
                       f"r.deleted_at IS {'NOT ' if trash else ''}NULL", (run_id,))
        if not rows:
            return None
        run = {**json.loads(rows[0]["data"]), **_summary_row(rows[0])}
        run["artifacts"] = {}
        for r in self._q("SELECT kind, path FROM artifacts WHERE run_id = ?", (run_id,)):
            run["artifacts"].setdefault(r["kind"], []).append(r["path"])
        if reports:
            run["reports"] = [json.loads(r["report"]) for r in self._q(
                "SELECT report FROM run_reports WHERE run_id = ? ORDER BY position", (run_id,))]
        run["devices"] = self.devices(run_id)
        run["reviews"] = self.reviews(run_id)
        return run

    def reviews(self, run_id: str) -> list[dict]:
        """A run's reviews, oldest first: id, created_at, verdict, text, author."""
        return [_review_row(r) for r in self._q("SELECT * FROM reviews WHERE run_id = ? ORDER BY created_at, id",
                                                (run_id,))]

    def reviews_of(self, run_ids: list[str]) -> dict[str, list[dict]]:
        """The reviews of many runs at once (the History table), oldest first."""
        out: dict[str, list[dict]] = {i: [] for i in run_ids}
        if run_ids:
            for r in self._q(f"SELECT * FROM reviews WHERE run_id IN ({','.join('?' * len(run_ids))}) "
                             "ORDER BY created_at, id", list(run_ids)):
                out[r["run_id"]].append(_review_row(r))
        return out

    def authors(self) -> list[str]:
        """The author filter's values: each author's email (or name when there is none), then BEFORE_SIGN_IN."""
        rows = self._q("SELECT DISTINCT CASE WHEN author_email != '' THEN lower(author_email) ELSE author_name END "
                       "FROM runs WHERE deleted_at IS NULL ORDER BY 1")
        values = [r[0] for r in rows if r[0]]
        return values + ([BEFORE_SIGN_IN] if any(not r[0] for r in rows) else [])

    def devices(self, run_id: str) -> list[dict]:
        """The device runs of this run's cell (oldest first), with each device's figures."""
        rows = self._q(f"SELECT {', '.join('r.' + c for c in _SUMMARY_COLUMNS)}, d.data FROM runs r "
                       "JOIN run_data d ON d.run_id = r.id WHERE r.parent_run = ? AND r.deleted_at IS NULL "
                       "ORDER BY r.created_at", (run_id,))
        return [{**_summary_row(r), "device": (json.loads(r["data"]).get("extra") or {}).get("device")} for r in rows]

    def distinct(self, column: str) -> list[str]:
        """Values present for a filter (model_name, recipe, verdict)."""
        if column not in ("model_name", "recipe", "verdict"):
            raise ValueError(column)
        return [r[0] for r in self._q(f"SELECT DISTINCT {column} FROM runs WHERE {column} IS NOT NULL AND "
                                      "deleted_at IS NULL ORDER BY 1")]


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def _summary_row(r: sqlite3.Row) -> dict:
    d = {k: r[k] for k in _SUMMARY_COLUMNS if not k.startswith("author_")}
    d["summary"] = json.loads(d["summary"])
    d["author"] = _author(r)
    return d


def _author(r: sqlite3.Row) -> dict | None:
    """The author columns as ``Person.to_json`` (None: recorded before sign-in)."""
    p = Person.from_json({"email": r["author_email"], "name": r["author_name"], "subject": r["author_sub"]})
    return p.to_json() if p else None


def _review_row(r: sqlite3.Row) -> dict:
    return {"id": r["id"], "created_at": r["created_at"], "verdict": r["verdict"], "text": r["text"],
            "author": _author(r)}


def _dumps(obj) -> str:
    return json.dumps(obj, default=_jsonable, allow_nan=False, separators=(",", ":"))


def _jsonable(x):
    if hasattr(x, "item"):           # numpy scalars
        return _clean(x.item())
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


def _clean(x):
    """JSON has no NaN/inf: they become strings, as everywhere else in the project (types.json_number)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _real(x) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _sort_key(x) -> float | None:
    v = _real(x)
    return None if v is None else (v if math.isfinite(v) else 1e308)    # NaN/inf sort as the worst error


def _slim(report: dict) -> dict:
    # The converter log can be megabytes; it stays in the store's tflite/<key>.json.
    return _clean({k: v for k, v in report.items() if k != "converter_log"})


def _artifact_rows(artifacts: dict) -> list[tuple[str, str]]:
    rows = []
    for kind, paths in artifacts.items():
        for p in [paths] if isinstance(paths, str) else paths:
            if p:
                rows.append((kind, str(p)))
    return sorted(set(rows))


def _with_siblings(p: Path) -> list[Path]:
    # A converted model's metadata (calls, log) sits beside it as <key>.json.
    return [p, p.with_suffix(".json")] if p.suffix == ".tflite" else [p]


def _file_sha(path: str | None) -> str | None:
    import hashlib
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def new_run_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def cell_name(report: dict) -> str:
    if report.get("route") is None:
        return "provided"
    return f"{report['route']}-{report['optimization']}" + ("-int8io" if report.get("int8_io") else "")


# ---- what a run records ----

@functools.lru_cache(maxsize=1)        # fixed for the life of a process
def _versions() -> dict[str, str | None]:
    """Versions of the stack, from package metadata (importing TensorFlow here would cost seconds)."""
    from . import __version__
    out = {}
    for name, dist in (("tensorflow", "tensorflow"), ("keras", "keras"), ("litert", "ai-edge-litert")):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = None
    try:
        out["tflite_lab"] = version("tflite_lab")
    except PackageNotFoundError:
        out["tflite_lab"] = __version__
    out["python"] = platform.python_version()
    return out


def versions() -> dict[str, str | None]:
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores ({platform.machine()})"


def _worst(values, lowest=False):
    from .metrics import worst
    return worst(values, lowest=lowest)


def summarize(report: dict) -> dict:
    """The headline numbers of one judged cell report (NaN kept as 'nan')."""
    from .metrics import headline_top1
    lat = ((report.get("latency") or {}).get("tflite") or {})
    metrics = report.get("metrics") or []
    return _clean({
        "max_abs_error": _worst(float(m["max_abs_error"]) for m in metrics) if metrics else None,
        "min_top1": headline_top1(metrics) if metrics else None,
        "latency_ms": lat.get("median_ms"), "threads": lat.get("threads"),
        "failures": report.get("failures", []),
    })


def _device_summary(device: dict) -> dict:
    outs = device.get("outputs") or []
    return {"max_abs_error": _worst([o.get("max_abs_error") for o in outs]),
            "latency_ms": (device.get("latency_ms") or {}).get("median"),
            "failures": [device["error"]] if device.get("error") else [],
            "device": device_label(device), "accelerator": device.get("accelerator")}


def device_label(device: dict) -> str:
    """'Android phone / Chrome 131', 'Mac / Safari 18', 'Linux / HeadlessChrome 156' from the user agent."""
    import re
    ua = device.get("user_agent") or ""
    if not ua:
        return "unknown device"
    kind = ("iPhone" if "iPhone" in ua else "iPad" if "iPad" in ua else "Android phone" if "Android" in ua and "Mobile" in ua
            else "Android tablet" if "Android" in ua else "Mac" if "Macintosh" in ua else "Windows PC" if "Windows" in ua
            else "ChromeOS" if "CrOS" in ua else "Linux" if "Linux" in ua else "device")
    for pat, name in ((r"HeadlessChrome/(\d+)", "HeadlessChrome"), (r"Edg/(\d+)", "Edge"), (r"Firefox/(\d+)", "Firefox"),
                      (r"CriOS/(\d+)", "Chrome"), (r"Chrome/(\d+)", "Chrome"), (r"Version/(\d+)[\d.]* .*Safari", "Safari")):
        m = re.search(pat, ua)
        if m:
            return f"{kind} / {name} {m.group(1)}"
    return f"{kind} / browser"


def _pick_headline(reports: list[dict]) -> dict | None:
    """A matrix's headline: its best cell (smallest within tolerance), else the first computed one."""
    from .charts import best_cell
    ok = [r for r in reports if r.get("tflite_bytes")]
    rows = [{"cell": cell_name(r), "size_bytes": r["tflite_bytes"], "ok": r.get("ok"),
             "max_abs_error": summarize(r)["max_abs_error"], "latency_ms": summarize(r)["latency_ms"]} for r in ok]
    best = best_cell(rows)
    return next((r for r in ok if cell_name(r) == best), ok[0] if ok else None)


def build_run(kind: str, reports: list[dict], prepared: dict, *, origin: str = "cli",
              failed: dict[str, dict] | None = None, extra: dict | None = None, note: str = "",
              samples_description: str | None = None, parent_run: str | None = None,
              author: Person | None = None) -> dict:
    """A run record from judged cell reports (``pipeline.judge_report``) and the prepared reference.

    Args:
        kind: "convert", "matrix", "debug" or "device" (a cell run on a visitor's device: ``extra["device"]``
            is the judged target report, ``parent_run`` the run of the cell).
        reports: the judged reports, one per computed cell.
        prepared: the 'prepare' job's result (model, samples, signature).
        failed: matrix cells that were refused or failed: {cell: {"message": ..., "kind": ...}}.
        author: who made it (the signed-in person, the CLI's --author); None: nobody known.
        extra: kind-specific data, e.g. {"layers": [...]} for a debug run (the report's per-layer table).
    """
    src = prepared["source"]
    head = _pick_headline(reports) if kind == "matrix" else (reports[0] if reports else None)
    failed = failed or {}
    verdict = head.get("verdict") if head else "error"
    if kind == "matrix" and reports:
        verdict = "pass" if any(r.get("ok") for r in reports) else "fail"
    device = (extra or {}).get("device") if kind == "device" else None
    if device is not None:          # the device's own verdict and latency, not its cell's
        verdict = {"pass": "pass", "fail": "fail", "ran, no reference": "ran, no reference"}.get(device.get("verdict"), "error")
    store = cache_dir()
    artifacts = {"samples": [prepared["samples_path"]], "reference": [prepared.get("reference_path")],
                 "tflite": [], "predictions": [], "script": []}
    for r in reports:
        artifacts["tflite"].append(r.get("tflite_path"))
        artifacts["predictions"].append(r.get("predictions_path"))
        code = (r.get("reproduce") or {}).get("code")
        if code:
            import hashlib
            from .store import Store
            suffix = ".sh" if (r.get("reproduce") or {}).get("language") == "bash" else ".py"
            path = Store(store).put_bytes("scripts", hashlib.sha256(code.encode()).hexdigest()[:32], suffix,
                                          code.encode())
            artifacts["script"].append(str(path))
    # A .tflite the user brought is theirs, not the store's product: never listed for deletion.
    artifacts["tflite"] = [p for p, r in zip(artifacts["tflite"], reports) if r.get("route") is not None]
    lat_threads = {cell_name(r): ((r.get("latency") or {}).get("tflite") or {}).get("threads") for r in reports}
    return {
        "kind": kind, "origin": origin, "created_at": time.time(),
        "model": {k: src.get(k) for k in ("filename", "sha256", "format", "size_bytes")},
        "samples": {"description": samples_description or prepared.get("samples_origin"),
                    "sha256": prepared.get("samples_sha"), "count": prepared.get("num_samples")},
        "route": head.get("route") if head and kind != "matrix" else (head.get("route") if head else None),
        "recipe": head.get("optimization") if head else None,
        "cell": (head.get("cell") or cell_name(head)) if head else None,
        "settings": {"int8_io": head.get("int8_io") if head else None, "calls": head.get("calls") if head else [],
                     "threads": lat_threads},
        "verdict": verdict, "ok": bool(head and head.get("ok")) if kind not in ("matrix", "device") else verdict == "pass",
        "tolerances": head.get("tolerances") if head else None,
        "metrics": _clean([{k: v for k, v in m.items() if k != "per_sample_max_abs"}
                           for m in (head.get("metrics") or [])]) if head else [],
        "accuracy": head.get("accuracy") if head else None,     # only when labels were given
        "original_bytes": src.get("size_bytes"), "tflite_bytes": head.get("tflite_bytes") if head else None,
        "latency": _clean((head.get("latency") if head else None)) if device is None else
                   _clean({"device": device.get("latency_ms"), "conditions": {"where": device.get("user_agent")}}),
        "summary": _device_summary(device) if device is not None else
                   summarize(head) if head else {"failures": [f["message"] for f in failed.values()]},
        "parent_run": parent_run, "author": author.to_json() if author else None,
        "failed_cells": failed,
        "signature": prepared.get("signature"), "info": prepared.get("info"),
        "versions": versions(), "host_cpu": host_cpu(),
        "artifacts": artifacts, "extra": _clean(extra or {}), "note": note,
        "reports": [{**r, "cell": r.get("cell") or cell_name(r), "tflite_sha256": _file_sha(r.get("tflite_path"))}
                    for r in reports],
    }


def record_run(kind: str, reports: list[dict], prepared: dict, *, origin: str = "cli",
               history: History | None = None, **kw) -> str:
    """Build and store a run; returns its id. The one call convert, matrix, debug, device and the pages use.

    ``kw`` as in ``build_run`` (failed, extra, note, samples_description, parent_run, author).
    """
    run = build_run(kind, reports, prepared, origin=origin, **kw)
    if history is not None:
        return history.record(run)
    with History() as h:
        return h.record(run)
