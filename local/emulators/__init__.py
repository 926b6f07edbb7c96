"""Provider emulators for tests and `make run`: they implement the providers' documented
behaviour, refusals included (bad PKCE, reused codes, revoked grants)."""
