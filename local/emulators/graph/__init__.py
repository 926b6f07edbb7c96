"""Microsoft Graph v1.0 mail, as much of it as the sync uses, in the shapes the Graph docs give.

Mailboxes (keyed by the address the bearer token belongs to) hold the well-known folders
`inbox`, `sentitems`, `drafts`, `deleteditems` and `archive`, with ids stable per mailbox, under
the root `msgfolderroot`; and the folders the user makes (`POST /me/mailFolders`, `.../childFolders`,
or `create_folder`), top-level or nested, with ids of their own. A folder's key (what a message,
a delta cursor and a change notification name it by) is its well-known name, or for a user folder
its id. Graph addresses a folder by id or well-known name only; the controls also take a display
path such as "Clients/Acme".
A message has two ids, as in Exchange: its immutable id, which never changes, and a default
("REST") id that changes whenever the message moves. Either finds the message; a request with
`Prefer: IdType="ImmutableId"` is answered with immutable ids, any other with REST ids.
Every change is reported to `listeners` (the change-notification part registers there) after
the change is visible. `/_emulator/graph/...` drives it from another process.

By concern:
- `model.py`: mailboxes, folders, messages, the change log, delta cursors (data only);
- `store.py`: the emulator's state and the changes made to it; `mime.py`: MIME in and out;
- `odata.py`: the query reader (`$select`, `$filter`, `$top`/`$skip`, `Prefer`);
  `resources.py`: the JSON a message or a folder is answered as; `responses.py`: errors, 429s;
- `folders.py`, `messages.py`, `attachments.py`: the mail routes;
- `delta.py`: delta per folder; `batch.py`: `$batch`;
- `routes.py`: dispatch (auth, faults, throttling, the route table); `controls.py`: the test and
  demo controls, in Python and over HTTP; `mail.py`: `GraphMail`, all of it together.
Throttling and fault injection are `local/emulators/faults.py`, shared with the Gmail emulator."""

from local.emulators.graph.mail import GraphMail
from local.emulators.graph.model import ROOT, WELL_KNOWN, FolderExists, Mailbox, Message
from local.emulators.graph.responses import graph_error
from local.emulators.graph.routes import ROUTE_KINDS
from local.emulators.graph.store import Listener

__all__ = [
    "ROOT",
    "ROUTE_KINDS",
    "WELL_KNOWN",
    "FolderExists",
    "GraphMail",
    "Listener",
    "Mailbox",
    "Message",
    "graph_error",
]
