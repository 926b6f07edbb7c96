"""`GraphMail`: the Graph mail emulator, its routes and its controls put together."""

from __future__ import annotations

from collections.abc import Callable

from werkzeug.wrappers import Request, Response

from local.emulators.graph.controls import Controls
from local.emulators.graph.routes import Routes


class GraphMail(Controls, Routes):
    def __init__(
        self,
        owner_of: Callable[[str | None], str | None],
        base_url: Callable[[], str],
        route: Callable[[Request], Response] | None = None,
    ) -> None:
        """`owner_of`: a bearer token's mailbox address; `base_url`: where the emulator is served;
        `route`: how inner $batch requests are dispatched (this emulator's `dispatch` by default)."""
        super().__init__(owner_of, base_url, route or self.dispatch)
