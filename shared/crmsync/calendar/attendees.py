"""CAL-13 over the tenant's directory: which attendees of a synced event are already tenant users
or contacts. The CRM makes the contacts (it is told by ContactCreatedFromAttendee) and keeps its
contacts current with us, so an address made a contact of is found as one from then on."""

from __future__ import annotations

from collections.abc import Sequence

from crmsync.directory import Directory
from crmsync.ids import is_address, normalize_address


class DirectoryPeople:
    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def known(self, tenant_id: str, emails: Sequence[str]) -> tuple[set[str], set[str]]:
        valid = [e for e in dict.fromkeys(emails) if is_address(e)]
        found = self._directory.lookup_many(tenant_id, valid) if valid else {}
        users = {normalize_address(a) for a, r in found.items() if r.users}
        contacts = {normalize_address(a) for a, r in found.items() if r.contacts}
        return users, contacts
