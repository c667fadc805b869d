"""GET and PUT /api/user/notification-preferences (seed 4.2).

    {"events": ["purchase_request_approved", "quotation_received"],
     "frequency": "immediate", "soundEnabled": true, "emailNotifications": false}

PUT replaces the caller's preferences (a field left out takes its default: every event,
immediate, sound on, no e-mail). `events` empty means every kind. They apply at once, to
live sockets too: the notification producer reads them in the same INSERT that creates a
notification (domain/notifications.py), so the next notification obeys the new settings
with nothing to push to the connections.
"""

from __future__ import annotations

from typing import Any

import psycopg
from quart import Response, request

from sinal.api.context import ApiContext
from sinal.api.validation import Field, parse_json, validate
from sinal.domain.notifications import EVENT_KINDS

FREQUENCIES = ("immediate", "hourly", "daily", "off")

PREFERENCES = (
    Field("events", "choice_list", max_length=len(EVENT_KINDS), choices=EVENT_KINDS,
          description="notification kinds to receive; empty: all"),
    Field("frequency", "choices", choices=FREQUENCIES,
          description="immediate: pushed at once; hourly/daily: kept for the next connect; "
                      "off: none"),
    Field("soundEnabled", "boolean"),
    Field("emailNotifications", "boolean"),
)
DEFAULTS: dict[str, Any] = {"events": [], "frequency": "immediate", "soundEnabled": True,
                            "emailNotifications": False}

_COLUMNS = ("events, frequency, sound_enabled, email_notifications, "
            "to_jsonb(updated_at) #>> '{}' AS updated_at")


def _shape(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {**DEFAULTS, "updatedAt": None}
    return {"events": list(row["events"]), "frequency": row["frequency"],
            "soundEnabled": row["sound_enabled"],
            "emailNotifications": row["email_notifications"], "updatedAt": row["updated_at"]}


def register_preferences(api: ApiContext) -> None:
    app = api.app

    @app.get("/api/user/notification-preferences")
    async def get_preferences() -> Response:
        user_id = (await api.caller()).user_id

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            return conn.execute(f"SELECT {_COLUMNS} FROM notification_preferences "
                                "WHERE user_id = %s", (user_id,)).fetchone()

        return api.json(_shape(await api.run(work)))

    @app.put("/api/user/notification-preferences")
    async def put_preferences() -> Response:
        caller = await api.caller()
        user_id = caller.user_id
        body = validate(parse_json(await request.get_data(as_text=False), optional=False,
                                   content_type=request.headers.get("Content-Type")),
                        PREFERENCES)
        wanted = {**DEFAULTS, **body}

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            return conn.execute(
                "INSERT INTO notification_preferences AS p (user_id, events, frequency, "
                "sound_enabled, email_notifications) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (user_id) DO UPDATE SET events = excluded.events, "
                "frequency = excluded.frequency, sound_enabled = excluded.sound_enabled, "
                "email_notifications = excluded.email_notifications, updated_at = now() "
                f"RETURNING {_COLUMNS}",
                (user_id, wanted["events"], wanted["frequency"], wanted["soundEnabled"],
                 wanted["emailNotifications"]),
            ).fetchone()

        saved = _shape(await api.run(work))
        api.audit_event("preferences_changed", "/api/user/notification-preferences",
                        {k: v for k, v in saved.items() if k != "updatedAt"}, caller)
        return api.json(saved)
