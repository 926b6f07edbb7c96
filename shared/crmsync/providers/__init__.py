"""Provider adapters behind the engine's ports (ChangeSource, ProviderHooks)."""
