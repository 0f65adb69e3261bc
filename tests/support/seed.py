"""The seed workflow's events and registration (the contact-list import of issue #2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.support.rpc import FunctionSpec

APP_ID = "crm"
FUNCTION_ID = "contacts-import"
UPLOADED = "api/contact_list.uploaded"
REVIEWED = "api/contact_list.reviewed"
FUNCTIONS = (FunctionSpec(FUNCTION_ID, UPLOADED, retries=4),)

# The steps of a valid, approved import, in execution order.
APPROVED_STEPS = ("validate-upload", "enrich", "wait-review", "create-contacts", "notify-success")

DEFAULT_CONTACTS = ("ada@example.com", "grace@example.com", "linus@example.com")


def uploaded(
    filename: str,
    upload_id: str,
    *,
    user_id: int = 7,
    contacts: Sequence[str] = DEFAULT_CONTACTS,
    event_id: str | None = None,
    **extra: Any,
) -> Any:
    """An `api/contact_list.uploaded` event (an `sdk_python.Event`)."""
    from sdk_python import Event

    data = {"filename": filename, "user_id": user_id, "upload_id": upload_id, "contacts": list(contacts)}
    data.update(extra)
    return Event(name=UPLOADED, data=data, id=event_id)


def reviewed(
    upload_id: str, *, approved: bool, filters: Sequence[str] = (), event_id: str | None = None
) -> Any:
    """An `api/contact_list.reviewed` event for `upload_id`."""
    from sdk_python import Event

    data = {"upload_id": upload_id, "is_approved": approved, "filters": list(filters)}
    return Event(name=REVIEWED, data=data, id=event_id)
