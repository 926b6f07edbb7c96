"""The local stack and the provider emulators: the service on one machine, no AWS, no Docker."""
