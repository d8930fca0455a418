"""Benchmark: the dashboard's server under concurrent sessions, and whether sessions stay apart.

Builds a lake of N synthetic patients through the pipeline as ``bench_dashboard.py`` does (its
``_build``), unless ``--lake`` names a lake that already went through it. Starts the real server
the way ``scripts/run`` does (``streamlit run <its script>``, from the repository, with
``.streamlit/config.toml``) headless on a free loopback port in demo mode (no sign-in, the admin
role) over that lake, as a child process. Then drives ``--sessions`` concurrent sessions, each a
websocket client speaking Streamlit's protocol as a browser tab does (``streamlit_client.py``:
the XSRF cookie from ``/``, ``BackMsg.rerun_script``, ``ForwardMsg`` read to ``script_finished``,
widget ids taken from the elements received), for ``--duration`` seconds or ``--rounds`` page
loads each. A page time is from the rerun request to ``script_finished``: the server's whole run
of the page (queries, audit writes, charts) and the transfer of its elements, not the browser's
drawing.

Every session goes round the same eight page loads, started at a different one (patient, cohort
or SQL), so all kinds run at once:

- ``patient page (by address)``: the patient page opened with ``?patient_id=`` (a link);
- ``patient page (next patient)``: another patient picked in the page's patient box;
- ``cohort page``, then ``cohort page (filtered)``: one disease group chosen in the filter;
- ``SQL page``; ``SQL query``: ``SELECT '<marker>' AS marker, disease_group, count(*) ...
  FROM bronze.patients``; ``SQL example query``: the page's ``EXAMPLE``
  (``dashboard/sql_example.py``) with the marker as first column; ``SQL query with an error``: a
  column named after the marker that does not exist (the page must show that error, and only to
  that session).

Each session has patients of its own (the patients of gold/outlook dealt out in turn) and a marker
per query (``session07query0012``). Isolation checks, per page load; any failure is a violation
and the benchmark exits 1:

- a patient page names its own patient and no other (the patient box's option list, which holds
  every patient, excepted), and the address it sets is its own patient's; a violation says
  whether the other patient was being shown to another session at that moment;
- no element of any page holds another session's marker; an SQL result holds exactly the marker
  of the query just run; the error query's message names its own marker;
- the cohort page's patient count is the one of the session's own filter.

An error (counted, not a violation) is a page that timed out, raised, showed an unexpected error
or the wrong page. Before the load, one session goes round the eight once, untimed under load
(the server's first imports and connections: reported as ``warm-up``).

Reports per kind of page p50 / p95 / max seconds, pages per second overall, errors and violations;
the commits to the audit log per second (a page view, a patient view and an SQL run each add
events, and a page waits for the commit of its own before it shows data); the server's RSS (its
process and children, ``VmRSS`` every 0.5 s: after the warm-up, peak under load, at its end);
the CPU seconds of the server and of these clients over the load (both on the same cores) and how
busy the machine was. Prints a table and JSON lines, and the server log's error lines.

    .venv/bin/python benchmarks/bench_dashboard_load.py --lake /tmp/mobility-bench/load-lake-1000 \
        [--sessions 20] [--duration 90 | --rounds 24]
    .venv/bin/python benchmarks/bench_dashboard_load.py --patients 1000 [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench_dashboard import _build, example_query
from common import print_table
from streamlit_client import (
    ProtocolError,
    ScriptRun,
    Session,
    dataframe_tables,
    element_texts,
    widget_state,
)

ROOT = Path(__file__).resolve().parents[1]
RUN_SCRIPT = ROOT / "scripts" / "run"
DISEASE_GROUPS = ("MS", "PD", "RA", "OTHER")
SERVER_START_SECONDS = 120.0
RSS_SAMPLE_SECONDS = 0.5
MARKER = re.compile(r"session(\d+)query(\d+)")
# Markdown escapes (dashboard.literal) and word joiners around what a page quotes from data
_UNESCAPE = str.maketrans("", "", "\\\u2060")
_WORD = re.compile(r"[\w-]+")


@dataclass(frozen=True)
class Step:
    """One page load of a session's round: its page (url path: the cohort page is the default
    page, served at ``/``), what it does, its title."""

    page: str
    action: str
    kind: str
    title: str


ROUND = (
    Step("patient", "open", "patient page (by address)", "Patient"),
    Step("patient", "next", "patient page (next patient)", "Patient"),
    Step("", "open", "cohort page", "Cohort overview"),
    Step("", "filter", "cohort page (filtered)", "Cohort overview"),
    Step("sql", "open", "SQL page", "Cohort SQL"),
    Step("sql", "marker", "SQL query", "Cohort SQL"),
    Step("sql", "example", "SQL example query", "Cohort SQL"),
    Step("sql", "error", "SQL query with an error", "Cohort SQL"),
)
KINDS = tuple(step.kind for step in ROUND)
# a session starts at one of the pages, so every kind runs at once from the start
STARTS = tuple(i for i, step in enumerate(ROUND) if step.action == "open")


# ------------------------------------------------------------------------------------- server


def serve_script() -> str:
    """The script ``scripts/run`` serves (``exec streamlit run <script>``)."""
    found = re.search(r"^\s*exec streamlit run (\S+)", RUN_SCRIPT.read_text(), re.MULTILINE)
    if not found:
        raise SystemExit(f"no 'exec streamlit run' in {RUN_SCRIPT}")
    return found.group(1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return bool(response.read().decode().strip() == "ok")
    except (urllib.error.URLError, OSError):
        return False


def start_server(lake_uri: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The dashboard as ``scripts/run`` starts it, on a free loopback port, in demo mode over
    ``lake_uri``; its output into ``log``. Returns the process and its base url."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        k: v for k, v in os.environ.items() if k not in ("MOBILITY_ENGINE", "MOBILITY_ROLES_FILE")
    }
    env.update(LAKE_URI=lake_uri, MOBILITY_DEMO="1")
    command = [
        *(sys.executable, "-m", "streamlit", "run", serve_script()),
        *("--server.port", str(port), "--server.address", "127.0.0.1"),
        *("--server.headless", "true"),
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not _healthy(url):
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise SystemExit(f"the dashboard did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    return server, url


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Terminate the server (killed after 15 s)."""
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=15)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/<pid>/task/*/children``)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return tree


def _rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants, in MB (0 for a process gone meanwhile)."""
    total_kb = 0
    for process in _process_tree(pid):
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total_kb += int(found.group(1)) if found else 0
    return total_kb / 1024


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` and its descendants so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for process in _process_tree(pid):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _machine_busy() -> tuple[int, int]:
    """Busy and total jiffies of all cores (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


class RssSampler:
    """Samples the server's RSS every 0.5 s on a thread: the latest and the peak since
    :meth:`reset`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.latest = self.peak = _rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self.latest = _rss_mb(self.pid)
            self.peak = max(self.peak, self.latest)

    def reset(self) -> None:
        """Start a new peak from now."""
        self.peak = self.latest = _rss_mb(self.pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------- the lake


@dataclass(frozen=True)
class LakeFacts:
    """What the checks compare pages with: every patient id, the patients with a forecast (from
    gold/outlook, largest fall first) and the patients per disease group."""

    patient_ids: frozenset[str]
    with_forecasts: tuple[str, ...]
    per_group: dict[str, int]


def lake_facts(lake_uri: str) -> LakeFacts:
    import polars as pl

    from lakehouse.catalog import OUTLOOK, PATIENTS
    from lakehouse.storage import Lake

    lake = Lake(lake_uri)
    patients = lake.read(PATIENTS)
    if not lake.exists(OUTLOOK):
        raise SystemExit(f"no gold/outlook in {lake_uri}: run the pipeline first")
    ranked = (
        lake.read(OUTLOOK)
        .filter(pl.col("champion"))
        .sort("year_end_change", "patient_id", nulls_last=True)
        .unique("patient_id", keep="first", maintain_order=True)["patient_id"]
        .to_list()
    )
    groups = patients["disease_group"].fill_null("OTHER").value_counts()
    return LakeFacts(
        patient_ids=frozenset(patients["patient_id"].to_list()),
        with_forecasts=tuple(ranked),
        per_group={str(g): int(n) for g, n in groups.iter_rows()},
    )


# ------------------------------------------------------------------------------------ sessions


@dataclass
class Outcome:
    """One page load: its kind, seconds, and what went wrong (errors, violations)."""

    session: int
    kind: str
    seconds: float
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


@dataclass
class Shared:
    """What every session's checks see: the lake's facts, and which session asked for which
    patient when (session, patient, request time, end of its run or None while it runs)."""

    facts: LakeFacts
    sql_example: str
    showings: list[list[Any]] = field(default_factory=list)

    def shown_meanwhile(self, session: int, start: float, end: float) -> dict[str, list[int]]:
        """The patients other sessions were being shown between ``start`` and ``end``."""
        meanwhile: dict[str, list[int]] = {}
        for other, patient, began, ended in self.showings:
            if other != session and began <= end and (ended is None or ended >= start):
                meanwhile.setdefault(patient, []).append(other)
        return meanwhile


def _texts(elements: list[Any]) -> str:
    return "\n".join(text for e in elements for text in element_texts(e)).translate(_UNESCAPE)


def _patient_ids_in(text: str, known: frozenset[str]) -> set[str]:
    return {word for word in _WORD.findall(text) if word in known}


class Tab:
    """One session's scenario: its patients, its markers, the page it is on, and the checks of
    every page load."""

    def __init__(self, index: int, patients: list[str], shared: Shared, session: Session):
        self.index = index
        self.patients = patients
        self.shared = shared
        self.session = session
        self.queries = 0
        self.visits = 0
        self.last: ScriptRun | None = None
        self.on_page: str | None = None

    async def load(self, step: Step) -> Outcome:
        """Do ``step`` (opening its page first when a widget step finds another page on show),
        check what came back.

        Raises:
            _Lost: the connection failed (the session ends).
        """
        if step.action != "open" and self.on_page != step.page:
            step = next(s for s in ROUND if s.page == step.page and s.action == "open")
        outcome = Outcome(self.index, step.kind, 0.0)
        expect: dict[str, Any] = {}
        request = self._request(step, expect)
        if isinstance(request, str):
            outcome.errors.append(request)
            return outcome
        showing = None
        if "patient" in expect:
            showing = [self.index, expect["patient"], time.monotonic(), None]
            self.shared.showings.append(showing)
        began = time.monotonic()
        try:
            run = await self.session.rerun(**request)
        except ProtocolError as err:
            outcome.errors.append(f"{step.kind}: {err}")
            raise _Lost(outcome) from err
        finally:
            if showing is not None:
                showing[3] = time.monotonic()
        outcome.seconds = run.seconds
        others = self.shared.shown_meanwhile(self.index, began, time.monotonic())
        self.last, self.on_page = run, step.page
        self._check(step, run, expect, others, outcome)
        return outcome

    def _widget(self, kind: str, label: str) -> Any:
        return self.last.widget(kind, label) if self.last is not None else None

    def _request(self, step: Step, expect: dict[str, Any]) -> dict[str, Any] | str:
        """The rerun request of ``step`` (``Session.rerun``'s arguments), what the page must show
        into ``expect``; a text when the page on show lacks the widget to use."""
        if step.page == "patient":
            patient = expect["patient"] = self.patients[self.visits % len(self.patients)]
            self.visits += 1
            if step.action == "open":
                return {"page": "patient", "query_string": urlencode({"patient_id": patient})}
            box = self._widget("selectbox", "Patient")
            if box is None:
                return "no patient box on the patient page"
            return {"widgets": [widget_state(box.id, string_value=patient)]}
        if step.page == "":
            if step.action == "open":
                expect["patients"] = sum(self.shared.facts.per_group.values())
                return {"page": "", "query_string": ""}
            group = expect["group"] = DISEASE_GROUPS[
                (self.index + self.visits) % len(DISEASE_GROUPS)
            ]
            self.visits += 1
            expect["patients"] = self.shared.facts.per_group.get(group, 0)
            box = self._widget("multiselect", "Disease group")
            if box is None:
                return "no disease group filter on the cohort page"
            return {"widgets": [widget_state(box.id, string_array_value=[group])]}
        if step.action == "open":
            return {"page": "sql", "query_string": ""}
        self.queries += 1
        marker = expect["marker"] = f"session{self.index:02d}query{self.queries:04d}"
        query = {
            "marker": (
                f"SELECT '{marker}' AS marker, disease_group, count(*) AS patients, "
                "min(birth_year) AS born_first, max(birth_year) AS born_last "
                "FROM bronze.patients GROUP BY disease_group ORDER BY disease_group"
            ),
            "example": (
                f"SELECT '{marker}' AS marker, example.*\nFROM (\n"
                f"{self.shared.sql_example}\n) AS example"
            ),
            "error": f"SELECT {marker} FROM bronze.patients",
        }[step.action]
        text_area, run_button = self._widget("text_area", "Query"), self._widget("button", "Run")
        if text_area is None or run_button is None:
            return "no query box or Run button on the SQL page"
        return {
            "widgets": [
                widget_state(text_area.id, string_value=query),
                widget_state(run_button.id, trigger_value=True),
            ]
        }

    def _check(
        self,
        step: Step,
        run: ScriptRun,
        expect: dict[str, Any],
        others: dict[str, list[int]],
        outcome: Outcome,
    ) -> None:
        if run.status != "FINISHED_SUCCESSFULLY":
            outcome.errors.append(f"run finished {run.status}")
        if run.page_not_found:
            outcome.errors.append(f"page not found: {run.page_not_found}")
        if step.title not in run.headings():
            outcome.errors.append(f"expected the page {step.title!r}, got {run.headings()[:2]}")
        for exception in run.of_type("exception"):
            outcome.errors.append(f"exception shown: {exception.type}: {exception.message[:120]}")
        elements = list(run.elements.values())
        everything = _texts(elements)
        # another session's marker anywhere on any page
        for session, query in {(int(s), int(q)) for s, q in MARKER.findall(everything)}:
            if session != self.index:
                outcome.violations.append(
                    f"session {self.index} ({step.kind}) received session {session}'s "
                    f"query {query} marker"
                )
        error_texts = [a.body.translate(_UNESCAPE) for a in run.of_type("alert") if a.format == 1]
        if step.action == "error":
            if not any(expect["marker"] in body for body in error_texts):
                outcome.errors.append(f"the error of query {expect['marker']} was not shown")
            error_texts = [t for t in error_texts if expect["marker"] not in t]
        elif step.page == "sql" and step.action == "open":
            # the page keeps the session's last outcome: its own error query's, expected
            own = f"session{self.index:02d}query"
            error_texts = [t for t in error_texts if own not in t]
        for body in error_texts:
            outcome.errors.append(f"error shown: {body[:160]}")
        if "marker" in expect and step.action != "error":
            self._check_result(run, expect["marker"], outcome)
        if "patients" in expect:
            self._check_cohort(run, expect, outcome)
        if "patient" in expect:
            self._check_patient(run, expect["patient"], others, outcome)

    def _check_result(self, run: ScriptRun, marker: str, outcome: Outcome) -> None:
        results = [t for t in dataframe_tables(run) if "marker" in t.column_names]
        if not results:
            outcome.errors.append(f"no result of query {marker}")
            return
        markers = {m for t in results for m in t.column("marker").to_pylist()}
        if markers != {marker}:
            foreign = sorted(m for m in markers if not m.startswith(f"session{self.index:02d}"))
            if foreign:
                outcome.violations.append(
                    f"session {self.index}'s result of {marker} holds {foreign}"
                )
            else:
                outcome.errors.append(f"the result of {marker} holds {sorted(markers)}")
        if outcome.kind == "SQL query":
            total = sum(sum(t.column("patients").to_pylist()) for t in results)
            expected = sum(self.shared.facts.per_group.values())
            if total != expected:
                outcome.errors.append(f"query {marker} counted {total} patients, not {expected}")

    def _check_cohort(self, run: ScriptRun, expect: dict[str, Any], outcome: Outcome) -> None:
        metric = run.widget("metric", "Patients")
        shown = metric.body if metric is not None else None
        wanted = f"{expect['patients']:,}"
        if shown != wanted:
            what = f"filter {expect.get('group', 'none')}"
            outcome.violations.append(
                f"session {self.index}'s cohort page ({what}) shows {shown} patients, not {wanted}"
            )

    def _check_patient(
        self, run: ScriptRun, patient: str, others: dict[str, list[int]], outcome: Outcome
    ) -> None:
        known = self.shared.facts.patient_ids
        box = run.widget("selectbox", "Patient")
        rest = [e for e in run.elements.values() if e.WhichOneof("type") != "selectbox"]
        named = _patient_ids_in(_texts(rest), known)
        if box is None:
            outcome.errors.append("no patient box")
        elif box.set_value and box.raw_value and box.raw_value != patient:
            named.add(box.raw_value)
        if run.query_string is not None:
            named |= _patient_ids_in(run.query_string, known)
        if patient not in named:
            outcome.errors.append(f"the patient page of {patient} does not name {patient}")
        for foreign in sorted(named - {patient}):
            seen_by = others.get(foreign)
            where = f", asked for by session(s) {seen_by} meanwhile" if seen_by else ""
            outcome.violations.append(
                f"session {self.index}'s page of {patient} names {foreign}{where}"
            )


class _Lost(Exception):
    """A session's connection failed: its outcome so far."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.errors[-1])
        self.outcome = outcome


async def drive(
    index: int,
    patients: list[str],
    shared: Shared,
    url: str,
    *,
    start: int,
    rounds: int | None,
    until: float,
    timeout: float,
) -> list[Outcome]:
    """One session: ``rounds`` page loads (or page loads until ``until``), round ``ROUND``
    from step ``start``."""
    session = Session(url, timeout=timeout)
    outcomes: list[Outcome] = []
    try:
        await session.open()
    except Exception as err:
        return [Outcome(index, "connect", 0.0, errors=[f"connect: {type(err).__name__}: {err}"])]
    tab = Tab(index, patients, shared, session)
    step = start
    try:
        while (len(outcomes) < rounds) if rounds is not None else (time.monotonic() < until):
            try:
                outcomes.append(await tab.load(ROUND[step % len(ROUND)]))
            except _Lost as lost:
                outcomes.append(lost.outcome)
                break
            step += 1
    finally:
        await session.close()
    return outcomes


async def load(
    sessions: int,
    facts: LakeFacts,
    url: str,
    *,
    rounds: int | None,
    duration: float,
    timeout: float,
    sql_example: str,
) -> list[Outcome]:
    """``sessions`` concurrent sessions; their outcomes."""
    shared = Shared(facts=facts, sql_example=sql_example)
    dealt = [
        list(facts.with_forecasts[i::sessions]) or list(facts.with_forecasts)
        for i in range(sessions)
    ]
    until = time.monotonic() + duration
    results = await asyncio.gather(
        *(
            drive(
                i,
                dealt[i],
                shared,
                url,
                start=STARTS[i % len(STARTS)],
                rounds=rounds,
                until=until,
                timeout=timeout,
            )
            for i in range(sessions)
        )
    )
    return [outcome for outcomes in results for outcome in outcomes]


# -------------------------------------------------------------------------------------- report


def _quantile(values: list[float], share: float) -> float:
    """The nearest-rank quantile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def page_rows(outcomes: list[Outcome], label: str) -> list[dict[str, Any]]:
    """Per kind of page: loads, errors, violations, p50 / p95 / max seconds."""
    rows = []
    for kind in (*KINDS, "connect"):
        mine = [o for o in outcomes if o.kind == kind]
        if not mine:
            continue
        timed = [o.seconds for o in mine if o.seconds > 0]
        rows.append(
            {
                "phase": label,
                "page": kind,
                "loads": len(mine),
                "errors": sum(bool(o.errors) for o in mine),
                "violations": sum(len(o.violations) for o in mine),
                "p50_s": round(_quantile(timed, 0.5), 3) if timed else None,
                "p95_s": round(_quantile(timed, 0.95), 3) if timed else None,
                "max_s": round(max(timed), 3) if timed else None,
            }
        )
    return rows


def server_log_problems(log: Path) -> list[str]:
    """The server log's lines that report errors (tracebacks, ERROR / WARNING records)."""
    lines = log.read_text(errors="replace").splitlines()
    return [
        line
        for line in lines
        if re.search(r"Traceback|Error|ERROR|Exception|WARNING|CRITICAL", line)
    ]


def audit_version(lake_uri: str) -> int:
    """The audit log's version (every page view and SQL run is a commit to it: -1 before any)."""
    from lakehouse.catalog import AUDIT_LOG
    from lakehouse.storage import Lake

    version = Lake(lake_uri).version(AUDIT_LOG)
    return -1 if version is None else version


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return call(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lake", help="a lake that already went through the pipeline (no build)")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default="/tmp/mobility-bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated lake")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of load")
    parser.add_argument("--rounds", type=int, help="page loads per session (instead of seconds)")
    parser.add_argument("--page-timeout", type=float, default=120.0)
    parser.add_argument("--show", type=int, default=20, help="problems listed at most")
    args = parser.parse_args()

    if args.lake:
        lake_dir = Path(args.lake)
    else:
        lake_dir = Path(args.workdir) / f"load-lake-{args.patients}"
        shutil.rmtree(lake_dir, ignore_errors=True)
        _build(lake_dir, args.patients, args.seed)
    lake_uri = str(lake_dir)
    facts = lake_facts(lake_uri)
    print(
        json.dumps(
            {
                "lake": lake_uri,
                "patients": len(facts.patient_ids),
                "with_forecasts": len(facts.with_forecasts),
                "server": f"streamlit run {serve_script()}",
            }
        ),
        flush=True,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-dashboard-load-", dir=args.workdir))
    log = log_dir / "streamlit.log"
    (server, url), start_seconds = _timed(lambda: start_server(lake_uri, log))
    sampler = RssSampler(server.pid)
    started_mb = sampler.latest
    try:
        warmup = asyncio.run(
            load(
                1,
                facts,
                url,
                rounds=len(ROUND),
                duration=0,
                timeout=args.page_timeout,
                sql_example=example_query(),
            )
        )
        sampler.reset()
        warm_mb = sampler.latest
        client_before = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu_before = _cpu_seconds(server.pid)
        busy_before = _machine_busy()
        audit_before = audit_version(lake_uri)
        outcomes, wall = _timed(
            lambda: asyncio.run(
                load(
                    args.sessions,
                    facts,
                    url,
                    rounds=args.rounds,
                    duration=args.duration,
                    timeout=args.page_timeout,
                    sql_example=example_query(),
                )
            )
        )
        client_after = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = _cpu_seconds(server.pid) - server_cpu_before
        busy_after = _machine_busy()
        audit_commits = audit_version(lake_uri) - audit_before
        peak_mb, end_mb = sampler.peak, sampler.latest
    finally:
        sampler.stop()
        stop_server(server)

    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    busy, total = (after - before for after, before in zip(busy_after, busy_before, strict=True))
    cores = os.cpu_count() or 1
    rows = page_rows(warmup, "warm-up (1 session)") + page_rows(
        outcomes, f"{args.sessions} sessions"
    )
    pages = sum(1 for o in outcomes if o.seconds > 0)
    violations = [v for o in outcomes + warmup for v in o.violations]
    errors = [f"session {o.session}, {o.kind}: {e}" for o in outcomes + warmup for e in o.errors]
    summary = {
        "sessions": args.sessions,
        "wall_s": round(wall, 1),
        "pages": pages,
        "pages_per_s": round(pages / wall, 2),
        "errors": len(errors),
        "violations": len(violations),
        "audit_commits_per_s": round(audit_commits / wall, 2),
        "server_start_s": round(start_seconds, 1),
        "rss_started_mb": round(started_mb),
        "rss_after_warmup_mb": round(warm_mb),
        "rss_peak_mb": round(peak_mb),
        "rss_end_mb": round(end_mb),
        "server_cpu_s": round(server_cpu, 1),
        "server_cores": round(server_cpu / wall, 2),
        "client_cpu_s": round(client_cpu, 1),
        "client_cores": round(client_cpu / wall, 2),
        "machine_busy": f"{busy / total:.0%} of {cores} cores" if total else "?",
    }
    for row in rows:
        print(json.dumps(row))
    print(json.dumps(summary))
    print_table(rows)
    print()
    for name, value in summary.items():
        print(f"{name}: {value}")
    for title, problems in (("violations", violations), ("errors", errors)):
        if problems:
            print(f"\n{title} ({len(problems)}; first {min(len(problems), args.show)}):")
            counted = Counter(problems)
            for problem, times in counted.most_common(args.show):
                print(f"  {problem}" + (f" (x{times})" if times > 1 else ""))
    logged = server_log_problems(log)
    print(f"\nserver log {log}: {len(logged)} error/warning lines")
    for line in logged[: args.show]:
        print(f"  {line[:240]}")
    if not args.lake and not args.keep:
        shutil.rmtree(lake_dir, ignore_errors=True)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
