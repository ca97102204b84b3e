"""Time as every part writes it: aware UTC, ISO 8601 with a ``Z``."""

import datetime as dt


def utcnow():
    return dt.datetime.now(dt.UTC)


def iso(moment):
    """``moment`` as ``YYYY-MM-DDTHH:MM:SSZ`` (seconds, UTC)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value):
    """Parse our ISO timestamps (``...Z``) or any ISO 8601 string; naive means UTC."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
