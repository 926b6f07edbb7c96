"""The Google Calendar API (v3) emulator: events of each user's calendars, sync tokens,
recurrence, push channels, and the failures Google documents. `api` is the API, `push` the
notification channels, `recurrence` the RRULE expansion, `controls` the HTTP controls a demo
or test uses to act as the user in Google Calendar."""

from local.emulators.gcal.api import CalendarEmulator

__all__ = ["CalendarEmulator"]
