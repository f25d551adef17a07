"""The edge stage: HTTP + JSON-RPC in, typed InboundCall out; every error rendered in render.py."""
