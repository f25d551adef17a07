"""Bastion's authorization server: one module per RFC or flow.

``keys`` holds the signing key ring (RFC 7517 JWKS, RFC 7638 thumbprints as ``kid``);
``tokens`` issues RFC 9068 JWT access tokens. A side door: it may import ``core``,
``config`` and ``store``, and the pipeline stages never import it.
"""
