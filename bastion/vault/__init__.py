"""The vault stage: (Principal, Decision) → UpstreamCredential."""
