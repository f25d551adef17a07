"""Upstream MCP servers: registry, HTTP client, supervised stdio processes, forwarding."""
