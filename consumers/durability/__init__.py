"""Durability: atomic checkpoint files, the typed manifest, the host format, the policy
and the rendezvous of a host's workers (the order itself: `ConsumeService.checkpoint`)."""
