"""What a user's browser does in a connect: open the authorization URL, answer the emulator's
consent page, and come back through the service's callback. Used by the tests and the demo."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl, urlsplit

import requests

_FORM = re.compile(r'<form method="post" action="([^"]+)"')


class ConsentError(RuntimeError):
    """The consent round trip did not go as a browser would see it."""


def _form_action(page: str) -> str:
    found = _FORM.search(page)
    if found is None:
        raise ConsentError("the page has no form to submit")
    return html.unescape(found.group(1))


class ConsentBrowser:
    def __init__(self, verify: str | bool = True) -> None:
        self.verify = verify  # the emulators' local CA for Microsoft's TLS

    def consent(
        self, authorization_url: str, email: str, decision: str = "allow"
    ) -> tuple[dict[str, str], str]:
        """Returns the query the service put on its return URL, and the callback it went through."""
        session = requests.Session()
        page = session.get(authorization_url, verify=self.verify, timeout=10)
        if page.status_code != 200:
            raise ConsentError(f"the authorization page answered {page.status_code}: {page.text[:200]}")
        fields = {
            k: html.unescape(v)
            for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
        }
        fields.update(email=email, decision=decision)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorization_url))
        decided = session.post(
            origin + _form_action(page.text),
            data=fields,
            allow_redirects=False,
            verify=self.verify,
            timeout=10,
        )
        if decided.status_code == 200:  # response_mode=form_post: the page posts the result back
            target = _form_action(decided.text)
            posted = {
                k: html.unescape(v) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', decided.text)
            }
            return self.follow(target, posted), target
        if decided.status_code != 302:
            raise ConsentError(f"the consent answer was {decided.status_code}: {decided.text[:200]}")
        callback = decided.headers["Location"]
        return self.follow(callback), callback

    @staticmethod
    def follow(callback: str, form: dict[str, str] | None = None) -> dict[str, str]:
        if form is None:
            back = requests.get(callback, allow_redirects=False, timeout=30)
        else:
            back = requests.post(callback, data=form, allow_redirects=False, timeout=30)
        if back.status_code != 302:
            raise ConsentError(f"the callback answered {back.status_code}: {back.text[:200]}")
        if back.headers.get("Cache-Control") != "no-store":
            raise ConsentError("the callback's answer may be cached (no Cache-Control: no-store)")
        return dict(parse_qsl(urlsplit(back.headers["Location"]).query))
