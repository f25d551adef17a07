"""bastion.web: the server-rendered pages an end user sees (login, consent, logout, messages).

Plain HTML and one inline CSS block, no JavaScript, so the pages work in any browser, with
plain HTTP form posts, and under a strict CSP. ``pages`` renders frozen view models;
``security`` holds the headers every page carries, signed cookies and CSRF tokens.
MCP authorization §"Security Considerations" / requirements digest §3.3 and §5.2 describe
what the consent page must show.
"""
