"""The authn stage: Authorization header → Principal, or a typed error that becomes a 401."""
