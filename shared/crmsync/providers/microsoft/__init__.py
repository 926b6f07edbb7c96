"""Microsoft Graph: the transport (`transport`: tokens on requests, throttling and Retry-After,
`$batch`, at most 4 requests in flight per mailbox), then Outlook mail: delta change source,
resync pages, send and actions (`mail`), the synced folders (`folders`), and subscriptions with
the webhook's logic (`subscriptions`). Graph calendar lands beside mail, on the same transport."""
