"""Who is signed in, what they may open, and the audit rows of what they open.

Sign-in is OpenID Connect through Streamlit's ``st.login`` (configured in
``.streamlit/secrets.toml``, see ``secrets.toml.example``); ``st.user`` holds the identity token's
claims. A role file (``config/roles.toml``, ``MOBILITY_ROLES_FILE``) maps the verified email or
the groups claim to the roles clinician, analyst, ops and admin; :data:`PAGE_ROLES` says which
roles open which page. Nothing else grants access: without ``is_logged_in`` there is no user, and
a user without a role sees a refusal. An email counts only when the provider vouches for it
(:func:`email_verified`); the audit log names every user by the provider's issuer and subject,
never by an email it did not vouch for.

Demo mode (``MOBILITY_DEMO=1``) is the local synthetic demo only: no sign-in, a banner on every
page, a role picked in the sidebar; it refuses to run against a lake on object storage or next
to a login configuration.

A signed-in session idle for ``MOBILITY_IDLE_MINUTES`` is signed out. The last activity of each
login (the identity token's issuer, subject and issue time) is kept on the server, so a new tab
or a reload does not reset it; after a server restart a login counts as active since its token
was issued.
"""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import streamlit as st

from dashboard.literal import markdown_literal
from lakehouse import audit
from lakehouse.errors import InputError
from lakehouse.pseudonyms import demo_allowed
from lakehouse.settings import get_settings
from lakehouse.storage import Lake

Role = Literal["clinician", "analyst", "ops", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

# The dashboard's pages (their url paths) and the roles that open each.
PAGE_ROLES: dict[str, frozenset[Role]] = {
    "cohort": frozenset({"clinician", "analyst", "admin"}),
    "patient": frozenset({"clinician", "admin"}),
    "sql": frozenset({"analyst", "admin"}),
    "monitoring": frozenset({"ops", "admin"}),
    "audit": frozenset({"ops", "admin"}),
    "reidentify": frozenset({"admin"}),
}
DEMO_ROLE_KEY = "demo_role"
# White space stripped from e-mails (ASCII only: str.strip() also takes NO-BREAK SPACE and more)
ASCII_WHITESPACE = " \t\n\r\f\v"
DEMO_BANNER = (
    "**Demo mode**: synthetic patients only, no sign-in, everything on this machine. "
    "Never use it with real data (docs/security.md)."
)


@dataclass(frozen=True)
class User:
    """The person using the dashboard.

    Args:
        name: shown in the sidebar (an email the provider did not verify is marked so).
        audit_name: the audit log's ``user``: the verified email, else ``sub:`` and the
            subject (never mistaken for an email, whatever the subject looks like).
        roles: what they may open.
        demo: the demo's user (no sign-in).
        login: the login's key for the idle timeout (issuer, subject, issue time).
        issuer: the identity token's ``iss``, recorded in the audit log.
        subject: the identity token's ``sub`` (unique per issuer), recorded in the audit log.
        unverified_email: the token's email when the provider did not verify it (it grants
            nothing; the refusal says so).
    """

    name: str
    audit_name: str
    roles: frozenset[Role]
    demo: bool = False
    login: str = ""
    issuer: str = ""
    subject: str = ""
    unverified_email: str = ""

    def may_open(self, page: str) -> bool:
        """Whether one of the user's roles opens ``page`` (a url path of :data:`PAGE_ROLES`)."""
        return bool(self.roles & PAGE_ROLES.get(page, frozenset()))

    @property
    def roles_text(self) -> str:
        """The roles as the audit log records them."""
        return ",".join(r for r in ROLES if r in self.roles)


# ---------------------------------------------------------------------------------- role file


def email_verified(claims: Mapping[str, Any]) -> bool:
    """Whether the identity token vouches for its ``email``: ``email_verified`` is true.

    OpenID Connect says a JSON boolean; the text ``"true"`` (any case) counts too, since some
    providers send the claim as text (Google's own example ID token did, Amazon Cognito's
    userinfo does) and it says the same thing from the same signed token. Anything else is not
    verified: missing, false, ``"false"``, ``0``, ``1``, ``"yes"``.
    """
    verified = claims.get("email_verified")
    return verified is True or (isinstance(verified, str) and verified.lower() == "true")


@dataclass(frozen=True)
class RoleMap:
    """Roles by verified email and by group (``config/roles.toml``)."""

    groups_claim: str = "groups"
    emails: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    groups: Mapping[str, frozenset[Role]] = field(default_factory=dict)

    def roles_of(self, claims: Mapping[str, Any]) -> frozenset[Role]:
        """The roles of an identity token's claims: by its email (only when the provider
        verified it, :func:`email_verified`, and only when it is ASCII, see
        :func:`email_key`) and by the groups in :attr:`groups_claim`; none when neither
        matches."""
        roles: set[Role] = set()
        email = claims.get("email")
        key = email_key(email) if isinstance(email, str) else None
        if key is not None and email_verified(claims):
            roles |= self.emails.get(key, frozenset())
        groups = claims.get(self.groups_claim)
        if isinstance(groups, str):
            groups = [groups]
        if isinstance(groups, list | tuple):
            for group in groups:
                if isinstance(group, str):
                    roles |= self.groups.get(group, frozenset())
        return frozenset(roles)


def email_key(email: str) -> str | None:
    """``email`` as the role file and tokens are compared: without ASCII white space around it,
    ASCII letters lower-cased; None when it is not ASCII. Python's ``str.lower()`` turns the
    KELVIN SIGN (U+212A) into ``k`` and ``str.strip()`` removes a NO-BREAK SPACE, so a provider
    account "U+212A im@hospital.test" would have matched ``kim@hospital.test``: an e-mail that
    is not ASCII grants no role by e-mail (groups still do)."""
    stripped = email.strip(ASCII_WHITESPACE)
    return stripped.lower() if stripped.isascii() else None


def parse_role_map(text: str, *, where: str = "the role file") -> RoleMap:
    """A :class:`RoleMap` from the TOML of a role file.

    Raises:
        InputError: not TOML, an unknown role, lists that are not lists of strings, or an
            e-mail that is not ASCII (it could match no token, see :func:`email_key`).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{where}: not TOML ({err})") from err
    claim = document.get("groups_claim", "groups")
    sections = document.get("roles", {})
    if not isinstance(claim, str) or not isinstance(sections, dict):
        raise InputError(f"{where}: groups_claim must be text and [roles.<role>] tables")
    emails: dict[str, set[Role]] = {}
    groups: dict[str, set[Role]] = {}
    for role, section in sections.items():
        if role not in ROLES:
            raise InputError(f"{where}: unknown role {role!r} (use {', '.join(ROLES)})")
        if not isinstance(section, dict):
            raise InputError(f"{where}: [roles.{role}] must be a table")
        for key, target in (("emails", emails), ("groups", groups)):
            values = section.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise InputError(f"{where}: roles.{role}.{key} must be a list of text")
            for value in values:
                name = email_key(value) if key == "emails" else value.strip(ASCII_WHITESPACE)
                if name is None:
                    raise InputError(
                        f"{where}: roles.{role}.emails: {value!a} is not ASCII (e-mails "
                        "are compared as ASCII only; give a non-ASCII address its role through "
                        "a group)"
                    )
                target.setdefault(name, set()).add(role)
    return RoleMap(
        groups_claim=claim,
        emails={k: frozenset(v) for k, v in emails.items()},
        groups={k: frozenset(v) for k, v in groups.items()},
    )


_role_maps: dict[tuple[str, float], RoleMap] = {}


def role_map() -> RoleMap:
    """The role file of the settings, read again when it changes.

    Raises:
        InputError: the file is missing or malformed (one line).
    """
    path = Path(get_settings().roles_file)
    try:
        stamp = (str(path.resolve()), path.stat().st_mtime)
    except OSError as err:
        raise InputError(
            f"role file {path} cannot be read ({err.strerror or err}): set MOBILITY_ROLES_FILE"
        ) from err
    if stamp not in _role_maps:
        _role_maps.clear()
        _role_maps[stamp] = parse_role_map(path.read_text(encoding="utf-8"), where=str(path))
    return _role_maps[stamp]


# ------------------------------------------------------------------------------- idle timeout


class IdleLogins:
    """The last activity of each login on this server (shared by its sessions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def touch(
        self, login: str, *, issued_at: float | None, now: float, idle_seconds: float
    ) -> bool:
        """Record activity of ``login`` now; False (and forgotten) when it was idle too long.

        A login not seen yet counts as active since its token was issued (``issued_at``; now
        when unknown): a week-old cookie after a restart must sign in again.
        """
        with self._lock:
            last = self._last.get(login, issued_at if issued_at is not None else now)
            if now - last > idle_seconds:
                self._last.pop(login, None)
                return False
            self._last[login] = now
            return True

    def forget(self, login: str) -> None:
        """Drop a login (signed out)."""
        with self._lock:
            self._last.pop(login, None)


@st.cache_resource(show_spinner=False)
def _idle_logins() -> IdleLogins:
    return IdleLogins()


# ------------------------------------------------------------------------------------- users


def demo_mode() -> bool:
    """Whether the dashboard runs as the local synthetic demo (``MOBILITY_DEMO``)."""
    return get_settings().demo


def login_configured() -> bool:
    """Whether ``.streamlit/secrets.toml`` has the ``[auth]`` section ``st.login`` needs."""
    try:
        return bool(st.secrets.load_if_toml_exists() and "auth" in st.secrets)
    except Exception:  # an unreadable secrets file: no login configuration
        return False


def _claims() -> dict[str, Any]:
    return {key: st.user[key] for key in st.user}


def current_user() -> User | None:
    """The signed-in user (or the demo's), None when nobody is signed in.

    Only ``st.user.is_logged_in`` counts: other claims a host may put in ``st.user`` do not.

    Raises:
        InputError: the role file cannot be read.
    """
    if demo_mode():
        role = st.session_state.get(DEMO_ROLE_KEY, "admin")
        chosen: Role = role if role in ROLES else "admin"
        return User(name="Demo user", audit_name="demo", roles=frozenset({chosen}), demo=True)
    claims = _claims()
    if claims.get("is_logged_in") is not True:
        return None
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    verified = email if email and email_verified(claims) else None
    subject = str(claims.get("sub") or "")
    # never an unverified email (nor preferred_username, which many providers let users choose)
    audit_name = verified or f"sub:{subject or 'unknown'}"
    shown = verified or (f"{email} (email not verified)" if email else None)
    name = str(claims.get("name") or shown or audit_name)
    login = "|".join(str(claims.get(k, "")) for k in ("iss", "sub", "iat"))
    return User(
        name=name,
        audit_name=audit_name,
        roles=role_map().roles_of(claims),
        login=login,
        issuer=str(claims.get("iss") or ""),
        subject=subject,
        unverified_email="" if verified else email or "",
    )


def still_active(user: User) -> bool:
    """Whether ``user``'s login has not gone idle past ``MOBILITY_IDLE_MINUTES`` (and this counts
    as activity), for what a page does later, outside its own run: a download made when it is
    clicked, which reruns nothing. The demo's user is always active."""
    if user.demo:
        return True
    return _idle_logins().touch(
        user.login,
        issued_at=None,
        now=time.time(),
        idle_seconds=get_settings().idle_minutes * 60,
    )


def _stop_with(message: str, *, sign_out: bool) -> None:
    st.title("Mobility")
    st.error(message, icon=":material/lock:")
    if sign_out and st.button("Sign out", key="auth_sign_out_refused"):
        st.logout()
    st.stop()


def signed_in_user(lake: Lake) -> User:
    """The user of this run, or a sign-in page, refusal or expiry notice and ``st.stop()``.

    Checks, in order: demo mode only where allowed; signed in; idle timeout; at least one role.
    Records the session's sign-in (and refusals and expiries) in the audit log.
    """
    settings = get_settings()
    if demo_mode():
        if not demo_allowed(lake.uri):
            _stop_with(
                f"Demo mode (MOBILITY_DEMO) is for the local synthetic demo only, not for the "
                f"lake {lake.uri}. Unset MOBILITY_DEMO and configure sign-in.",
                sign_out=False,
            )
        if login_configured():
            _stop_with(
                "Demo mode (MOBILITY_DEMO) is on while sign-in is configured "
                "(.streamlit/secrets.toml): unset MOBILITY_DEMO to require sign-in.",
                sign_out=False,
            )
    user = current_user()
    if user is None:
        _sign_in_page()
        st.stop()
    assert user is not None
    if not user.demo:
        claims = _claims()
        issued = claims.get("iat")
        fresh = _idle_logins().touch(
            user.login,
            issued_at=float(issued) if isinstance(issued, int | float) else None,
            now=time.time(),
            idle_seconds=settings.idle_minutes * 60,
        )
        if not fresh:
            record(lake, user, "expired", "sign-in", outcome="idle too long")
            st.session_state.pop("_audit_user", None)
            st.logout()
            st.stop()
    if st.session_state.get("_audit_user") != user.audit_name:
        if not user.roles:
            record(lake, user, "refused", "sign-in", outcome="no role")
            unverified = (
                " Its email grants no role: your identity provider did not mark it verified "
                "(email_verified)."
                if user.unverified_email
                else ""
            )
            _stop_with(
                f"You are signed in as {markdown_literal(user.audit_name)}, but this account "
                f"has no role in Mobility.{unverified} Ask an administrator for one "
                "(config/roles.toml or your identity provider's groups).",
                sign_out=True,
            )
        note(lake, user, "sign-in", "sign-in")  # written with the page view
        st.session_state["_audit_user"] = user.audit_name
    return user


def _sign_in_page() -> None:
    st.title("Mobility")
    if not login_configured():
        st.error(
            "Sign-in is not configured: copy .streamlit/secrets.toml.example to "
            ".streamlit/secrets.toml and fill in your identity provider (or run the local "
            "synthetic demo with MOBILITY_DEMO=1).",
            icon=":material/lock:",
        )
        return
    st.write("Patient mobility data: sign in with your hospital account to continue.")
    if st.button("Sign in", type="primary", icon=":material/login:", key="auth_sign_in"):
        st.login()


def sidebar(user: User, lake: Lake) -> None:
    """Who is signed in, with their roles and a sign-out button (the demo: a role picker)."""
    with st.sidebar:
        if user.demo:
            st.selectbox(
                "Demo: view as",
                ROLES,
                index=ROLES.index("admin"),
                key=DEMO_ROLE_KEY,
                help="Demo mode only: see the dashboard as each role sees it.",
            )
            return
        st.caption(
            f"Signed in as **{markdown_literal(user.name)}** ({', '.join(sorted(user.roles))})"
        )
        if st.button("Sign out", icon=":material/logout:", key="auth_sign_out"):
            record(lake, user, "sign-out", "sign-in")
            _idle_logins().forget(user.login)
            st.session_state.pop("_audit_user", None)
            st.logout()


def require(page: str, *, wait_for_audit: bool = True) -> User:
    """The current user, who may open ``page``; else a refusal and ``st.stop()``. Every page
    calls this before it loads anything (the app checks first; this is the second lock).

    Then the run's queued audit events (sign-in, page view) are written. With
    ``wait_for_audit=False`` their write only starts, in the background: the page loads its data
    meanwhile and calls :func:`wait_until_recorded` before it shows any of it.

    Raises:
        StorageError: the audit events could not be written (nothing is shown).
    """
    user = current_user()
    if user is None or not user.may_open(page):
        st.error(refusal(user, page), icon=":material/block:")
        st.stop()
    assert user is not None
    if wait_for_audit:
        wait_until_recorded()
    else:
        start_recording()
    return user


def refusal(user: User | None, page: str) -> str:
    """The one-line refusal of ``page`` for ``user``."""
    allowed = ", ".join(r for r in ROLES if r in PAGE_ROLES.get(page, frozenset()))
    if user is None:
        return "Sign in first: nothing was loaded."
    roles = ", ".join(sorted(user.roles)) or "no role"
    return (
        f"Not for your role: this page is for {allowed or 'nobody'}; you are "
        f"{markdown_literal(user.audit_name)} ({roles}). Nothing was loaded, and the attempt is in "
        "the audit log."
    )


# -------------------------------------------------------------------------------------- audit
#
# A run's events (sign-in, page, patient) are queued and written together in one commit. Pages
# wait for that write before they show data (require() waits; the patient page loads the
# patient's data while the write runs in the background and waits before it shows any of it).

_QUEUE_KEY = "_audit_queue"


@dataclass
class _Batch:
    """Events written in one commit, and the background write, once started."""

    lake: Lake
    events: list[audit.AuditEvent] = field(default_factory=list)
    writer: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        """Write the events in one commit on a background thread (once)."""
        if self.writer is not None:
            return

        def write() -> None:
            try:
                audit.record(self.lake, self.events)
            except BaseException as err:  # raised in the thread that waits for the write
                self.error = err

        self.writer = threading.Thread(target=write, name="audit-write", daemon=True)
        self.writer.start()


def _queue() -> list[_Batch]:
    """This session's batches not known to be on record, oldest first (the last may be open)."""
    queue = st.session_state.get(_QUEUE_KEY)
    if not isinstance(queue, list):
        queue = []
        st.session_state[_QUEUE_KEY] = queue
    return queue


def note(
    lake: Lake,
    user: User,
    action: audit.Action,
    page: str,
    *,
    patient_id: str | None = None,
    sql_sha256: str | None = None,
    rows: int | None = None,
    outcome: str = "ok",
) -> None:
    """Queue an event of ``user`` for the audit log, written with the run's other queued events
    in one commit by :func:`wait_until_recorded` (or in the background from
    :func:`start_recording`). The queue lives in the session: a page shows no data before
    :func:`wait_until_recorded` has written all of it."""
    queue = _queue()
    if not queue or queue[-1].writer is not None:
        queue.append(_Batch(lake))  # a batch being written takes no more events
    batch = queue[-1]
    batch.events.append(
        audit_event(
            user,
            action,
            page,
            patient_id=patient_id,
            sql_sha256=sql_sha256,
            rows=rows,
            outcome=outcome,
        )
    )


def audit_event(
    user: User,
    action: audit.Action,
    page: str,
    *,
    patient_id: str | None = None,
    sql_sha256: str | None = None,
    rows: int | None = None,
    outcome: str = "ok",
) -> audit.AuditEvent:
    """The audit event of ``user`` doing ``action`` on ``page`` from the dashboard (for a
    caller that writes it itself, such as the printable report when it is downloaded)."""
    return audit.AuditEvent(
        user=user.audit_name,
        issuer=user.issuer or None,
        subject=user.subject or None,
        roles=user.roles_text,
        client="dashboard",
        action=action,
        page=page,
        patient_id=patient_id,
        sql_sha256=sql_sha256,
        rows=rows,
        outcome=outcome,
    )


def start_recording() -> None:
    """Start writing the queued events in the background: the page may load its data meanwhile
    but must call :func:`wait_until_recorded` before it shows any of it."""
    queue = _queue()
    if queue:
        queue[-1].start()


def wait_until_recorded() -> None:
    """Write the queued events (one commit) and wait for every write started before.

    Raises:
        StorageError: events could not be written; the caller shows no data then. They stay
            queued and are written with the next run's events.
    """
    queue = _queue()
    if not queue:
        return
    start_recording()
    failed: list[_Batch] = []
    for batch in list(queue):
        assert batch.writer is not None
        batch.writer.join()
        if batch.error is not None:
            failed.append(batch)
    queue.clear()
    if failed:
        # a failed append stored no rows: the events are written again with the next run's
        retry = _Batch(failed[0].lake)
        for batch in failed:
            retry.events.extend(batch.events)
        queue.append(retry)
        error = failed[0].error
        assert error is not None
        raise error


def record(
    lake: Lake,
    user: User,
    action: audit.Action,
    page: str,
    *,
    patient_id: str | None = None,
    sql_sha256: str | None = None,
    rows: int | None = None,
    outcome: str = "ok",
) -> None:
    """Append one event of ``user`` to the audit log now, with any queued events (one commit).

    Raises:
        StorageError: the event could not be written (the caller shows nothing then).
    """
    note(
        lake,
        user,
        action,
        page,
        patient_id=patient_id,
        sql_sha256=sql_sha256,
        rows=rows,
        outcome=outcome,
    )
    wait_until_recorded()


def record_page_view(lake: Lake, user: User, page: str) -> None:
    """Queue the event that ``user`` opened ``page``, once per visit (reruns of the same page are
    the same visit); the page waits for it before it shows data (:func:`require`)."""
    if st.session_state.get("_audit_page") == page:
        return
    note(lake, user, "page", page)
    st.session_state["_audit_page"] = page
    st.session_state.pop("_audit_patient", None)


def record_patient_view(lake: Lake, user: User, page: str, patient_id: str) -> None:
    """Start recording that ``user`` sees ``patient_id`` (a pseudonym) on ``page``, once per
    patient and visit: the write runs in the background while the page loads the patient's data,
    and the page calls :func:`wait_until_recorded` before it shows any of it."""
    if st.session_state.get("_audit_patient") != patient_id:
        note(lake, user, "patient", page, patient_id=patient_id)
        st.session_state["_audit_patient"] = patient_id
    start_recording()
