"""Interop tests: the official conformance suite and real third-party MCP clients."""
