"""The provider-neutral calendar engine: what an activity and an event are, the fingerprint of the
fields both sides share, and the pure rules that plan what one item needs (CAL-1 to CAL-18).
Provider adapters and the engine that acts on a plan come on top of these."""
