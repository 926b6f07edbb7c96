"""Google: the shared client and credentials plumbing (`gmail.gmail_service`), then Gmail: the
history change source and resync pages (`gmail`), watches (`watch`), send, archive and trash
(`actions`). Google Calendar lands beside Gmail."""
