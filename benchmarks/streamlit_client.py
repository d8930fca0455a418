"""A Streamlit client that speaks the browser's protocol over the websocket, for load benchmarks.

One :class:`Session` is one browser tab: it fetches ``/`` for the XSRF cookie as the browser does,
opens ``ws://HOST:PORT/_stcore/stream`` with the subprotocols the frontend sends (``streamlit``
and the cookie's token) and its ``Origin``, then asks for script runs with
``BackMsg(rerun_script=ClientState(...))`` and reads ``ForwardMsg`` until ``script_finished``.
Widget ids come from the elements of the last run, as the frontend takes them; only the widgets a
test "touches" are sent (the others keep their values on the server, as they would for a
browser, which sends all of them).

No message is ever claimed cached (``cached_message_hashes`` stays empty), so the server sends
every element in full each run; a browser would be sent references to the large ones it holds.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import ClientConnection, connect

XSRF_COOKIE = "_streamlit_xsrf"
STATUS = {value: name for name, value in ForwardMsg.ScriptFinishedStatus.items()}


class ProtocolError(RuntimeError):
    """The server answered something a browser could not use (closed, timed out, a reference
    to a message never sent)."""


@dataclass
class ScriptRun:
    """What one script run sent: its elements (the last at each delta path, and every one in
    order), the address the page asked for, and how it finished.

    Args:
        seconds: from the rerun request to ``script_finished``.
        status: the ``script_finished`` status (``FINISHED_SUCCESSFULLY``, ...).
        elements: the last element at each delta path.
        received: every element in arrival order (one replaced later included).
        query_string: the address's query the page set (``page_info_changed``), else None.
        page_not_found: the page name the server did not know, else None.
        bytes_received: serialized size of every ``ForwardMsg`` of the run.
    """

    seconds: float
    status: str
    elements: dict[tuple[int, ...], Element] = field(default_factory=dict)
    received: list[Element] = field(default_factory=list)
    query_string: str | None = None
    page_not_found: str | None = None
    bytes_received: int = 0

    def of_type(self, kind: str) -> list[Any]:
        """The payloads of the run's current elements of ``kind`` (``"selectbox"``, ...)."""
        return [getattr(e, kind) for e in self.elements.values() if e.WhichOneof("type") == kind]

    def widget(self, kind: str, label: str) -> Any:
        """The current element of ``kind`` with ``label`` (None when the page has none)."""
        return next((w for w in self.of_type(kind) if w.label == label), None)

    def headings(self) -> list[str]:
        """The bodies of the page's headings (``st.title``, ``st.subheader``)."""
        return [h.body for h in self.of_type("heading")]


def element_texts(message: Message) -> Iterator[str]:
    """Every text an element carries: its string fields, recursively, and the column names and
    text cells of the Arrow tables in it (dataframes)."""
    for descriptor, value in message.ListFields():
        values = value if descriptor.is_repeated else (value,)
        for item in values:
            if descriptor.type == FieldDescriptor.TYPE_STRING:
                yield item
            elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
                yield from element_texts(item)
            elif descriptor.type == FieldDescriptor.TYPE_BYTES and item:
                yield from _arrow_texts(item)


def arrow_table(data: bytes) -> pa.Table | None:
    """The Arrow table of a dataframe element's bytes (None when they are not one)."""
    try:
        return ipc.open_stream(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError):
        return None


def dataframe_tables(run: ScriptRun) -> list[pa.Table]:
    """The Arrow tables of the run's dataframes (eager data or a lazy one's first chunk)."""
    tables = []
    for frame in run.of_type("dataframe"):
        data = frame.arrow_data.data or frame.lazy_data.initial_chunk.data
        table = arrow_table(data) if data else None
        if table is not None:
            tables.append(table)
    return tables


def _arrow_texts(data: bytes) -> Iterator[str]:
    table = arrow_table(data)
    if table is None:
        return
    yield from table.column_names
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            yield from (value for value in column.to_pylist() if value is not None)


def widget_state(widget_id: str, **value: Any) -> WidgetState:
    """A widget's state as the frontend sends it: ``string_value=...``, ``trigger_value=True``,
    ``string_array_value=[...]``."""
    state = WidgetState(id=widget_id)
    for name, item in value.items():
        if name == "string_array_value":
            state.string_array_value.data[:] = item
        else:
            setattr(state, name, item)
    return state


class Session:
    """One browser tab on the dashboard.

    Args:
        base_url: ``http://127.0.0.1:PORT``.
        timeout: seconds a script run may take before :class:`ProtocolError`.
    """

    def __init__(self, base_url: str, *, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # url path -> page script hash, from the app's navigation (the sidebar's links)
        self.pages: dict[str, str] = {}
        self.query_string = ""
        # the page on show (its script hash), sent with every run as the frontend does
        self.page_script_hash = ""
        self._ws: ClientConnection | None = None

    async def open(self) -> None:
        """Load ``/`` (the XSRF cookie) and open the websocket, as the frontend does."""
        xsrf = await asyncio.to_thread(self._xsrf_cookie)
        host = self.base_url.split("://", 1)[1]
        self._ws = await connect(
            f"ws://{host}/_stcore/stream",
            subprotocols=["streamlit", xsrf] if xsrf else ["streamlit"],  # type: ignore[list-item]
            origin=self.base_url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"{XSRF_COOKIE}={xsrf}"} if xsrf else None,
            max_size=None,
            open_timeout=self.timeout,
            ping_timeout=None,  # a busy server may answer pings late; runs have their timeout
        )

    def _xsrf_cookie(self) -> str:
        with urllib.request.urlopen(self.base_url + "/", timeout=self.timeout) as response:
            response.read()
            cookies = SimpleCookie()
            for header in response.headers.get_all("Set-Cookie") or ():
                cookies.load(header)
        morsel = cookies.get(XSRF_COOKIE)
        return morsel.value if morsel is not None else ""

    async def close(self) -> None:
        """Close the websocket (the tab is closed)."""
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def rerun(
        self,
        *,
        page: str | None = None,
        query_string: str | None = None,
        widgets: Sequence[WidgetState] = (),
    ) -> ScriptRun:
        """Ask for a script run and read it to ``script_finished``.

        Args:
            page: the url path of a page to switch to (by its script hash once the navigation
                is known, as the sidebar does; by name on the first run, as an address does);
                None stays on the page on show (its hash, from the last navigation).
            query_string: the address's query; None keeps the one the page last set.
            widgets: the widget states the user changed (a button's trigger included).

        Raises:
            ProtocolError: the connection closed, the run took longer than the timeout, or the
                server sent a reference to a cached message.
        """
        if self._ws is None:
            raise ProtocolError("the session is not open")
        if query_string is not None:
            self.query_string = query_string
        message = BackMsg()
        state = message.rerun_script
        state.query_string = self.query_string
        if page is None:
            state.page_script_hash = self.page_script_hash
        elif page in self.pages:
            state.page_script_hash = self.pages[page]
        else:
            state.page_name = page
        state.widget_states.widgets.extend(widgets)
        info = state.context_info
        info.timezone, info.timezone_offset, info.locale = "UTC", 0, "en-US"
        info.url = f"{self.base_url}/{page or ''}"
        started = time.perf_counter()
        await self._ws.send(message.SerializeToString())
        run = ScriptRun(seconds=0.0, status="")
        try:
            async with asyncio.timeout(self.timeout):
                while not run.status:
                    self._take(run, await self._ws.recv(), started)
        except TimeoutError as err:
            raise ProtocolError(f"no script_finished after {self.timeout:g} s") from err
        except Exception as err:  # the connection closed
            if isinstance(err, ProtocolError):
                raise
            raise ProtocolError(f"{type(err).__name__}: {err}") from err
        return run

    def _take(self, run: ScriptRun, payload: str | bytes, started: float) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        run.bytes_received += len(data)
        message = ForwardMsg()
        message.ParseFromString(data)
        kind = message.WhichOneof("type")
        if kind == "ref_hash":
            raise ProtocolError("the server referred to a cached message never sent")
        if kind == "delta" and message.delta.WhichOneof("type") == "new_element":
            element = message.delta.new_element
            run.elements[tuple(message.metadata.delta_path)] = element
            run.received.append(element)
        elif kind == "navigation":
            for app_page in message.navigation.app_pages:
                self.pages[app_page.url_pathname] = app_page.page_script_hash
            self.page_script_hash = message.navigation.page_script_hash
        elif kind == "page_info_changed":
            run.query_string = self.query_string = message.page_info_changed.query_string
        elif kind == "page_not_found":
            run.page_not_found = message.page_not_found.page_name or "?"
        elif kind == "script_finished":
            run.seconds = time.perf_counter() - started
            run.status = STATUS.get(message.script_finished, str(message.script_finished))
