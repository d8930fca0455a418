"""Signed-in identities for the dashboard tests: a role file and the identity-token claims
``st.user`` holds for each role (AppTest cannot run ``st.login``; it takes ``AppTest.user``)."""

from __future__ import annotations

import time
from typing import Any

from streamlit.testing.v1 import AppTest

ISSUER = "https://login.example.org"

# One email per role, and a group that makes an admin.
ROLES_TOML = """
groups_claim = "groups"

[roles.clinician]
emails = ["clinician@example.org"]

[roles.analyst]
emails = ["analyst@example.org"]

[roles.ops]
emails = ["ops@example.org"]

[roles.admin]
emails = ["admin@example.org"]
groups = ["mobility-admins"]
"""


def claims(
    email: str, *, groups: list[str] | None = None, issued_at: float | None = None, **extra: Any
) -> dict[str, Any]:
    """What ``st.user`` holds after ``st.login`` for this identity."""
    issued = int(issued_at if issued_at is not None else time.time())
    return {
        "is_logged_in": True,
        "iss": ISSUER,
        "sub": f"sub-{email}",
        "email": email,
        "email_verified": True,
        "name": email.split("@")[0].title(),
        "iat": issued,
        "exp": issued + 3600,
        "groups": groups or [],
        **extra,
    }


def signed_in(app: AppTest, role: str) -> AppTest:
    """``app`` as the test identity of ``role`` (``clinician``, ``analyst``, ``ops``, ``admin``)."""
    app.user = claims(f"{role}@example.org")
    return app
