"""The provider-neutral mail sync engine: which message syncs, to which CRM thread, linked to
whom, exactly once. Gmail, Graph and IMAP adapters feed it ProviderMessages."""
