"""A small, self-contained MCP server shipped with Bastion for demos and tests.

Run it with ``python -m bastion.demo.server [--notes-file PATH]``; it speaks MCP over stdio,
needs no network, and exercises the features a gateway must carry: tools, resources and
resource templates, prompts, progress notifications and form elicitation, in both protocol eras.
"""
