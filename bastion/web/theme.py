"""The one CSS block every page inlines.

``security`` hashes this exact text into the page CSP (``style-src 'sha256-…'``) and the base
template inlines it unchanged, so the two cannot drift. ASCII only; no ``url()``, no
``@import``: the CSP lets the page load nothing.
"""

from __future__ import annotations

PAGE_CSS = """
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--fg:#17202a;--muted:#5b6673;--line:#d7dce2;
--accent:#1d5bbf;--accent-hover:#164a9e;--on-accent:#fff;--soft:#f1f3f5;--warn-bg:#fff7e0;
--warn-line:#d39b00;--err-bg:#fdeded;--err-line:#c9252d;--focus:#1d5bbf}
@media (prefers-color-scheme:dark){:root{--bg:#0e1116;--card:#171b22;--fg:#e6e9ee;--muted:#9aa4b1;
--line:#2c333d;--accent:#4b8df0;--accent-hover:#6ba1f3;--on-accent:#0b0e13;--soft:#1f252e;
--warn-bg:#2e2510;--warn-line:#c99a1e;--err-bg:#33171a;--err-line:#e2555c;--focus:#6ba1f3}}
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
padding:24px 16px;background:var(--bg);color:var(--fg);
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.card{width:100%;max-width:440px;background:var(--card);border:1px solid var(--line);
border-radius:12px;padding:32px 28px;box-shadow:0 1px 2px rgba(0,0,0,.06),0 8px 24px rgba(0,0,0,.06)}
.brand{display:flex;align-items:center;gap:8px;margin:0 0 20px;font-weight:600;color:var(--muted)}
.brand svg{width:22px;height:22px;flex:none}
h1{font-size:1.4rem;line-height:1.3;margin:0 0 8px}
p{margin:0 0 16px}
.lead{color:var(--muted)}
.lead strong,.facts strong{color:var(--fg)}
.field{margin:0 0 16px}
label{display:block;font-weight:600;margin:0 0 6px}
input[type=text],input[type=password]{display:block;width:100%;font:inherit;color:inherit;
background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.btn{display:inline-flex;align-items:center;justify-content:center;min-height:44px;padding:10px 18px;
font:inherit;font-weight:600;border-radius:8px;border:1px solid transparent;cursor:pointer;
text-decoration:none;text-align:center}
.btn-primary{background:var(--accent);color:var(--on-accent)}
.btn-primary:hover{background:var(--accent-hover)}
.btn-secondary{background:transparent;color:var(--fg);border-color:var(--line)}
.btn-secondary:hover{background:var(--soft)}
.btn-block{width:100%}
a:focus,button:focus,input:focus{outline:3px solid var(--focus);outline-offset:2px}
a:focus:not(:focus-visible),button:focus:not(:focus-visible){outline:none}
.actions{display:flex;gap:12px;margin-top:24px}
.actions .btn{flex:1}
.alert{border:1px solid;border-left-width:4px;border-radius:8px;padding:10px 12px;margin:0 0 16px}
.alert-error{background:var(--err-bg);border-color:var(--err-line)}
.alert-warn{background:var(--warn-bg);border-color:var(--warn-line)}
.facts{margin:20px 0 0;padding:0}
.facts dt{font-size:.8rem;font-weight:600;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted);margin:16px 0 4px}
.facts dd{margin:0}
.host{font-size:1.15rem;font-weight:700}
.note{display:block;font-size:.9rem;color:var(--muted)}
code{display:block;margin-top:4px;padding:6px 8px;border-radius:6px;background:var(--soft);
font:.85rem/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
strong,code,dd,.host{overflow-wrap:anywhere}
.scopes{margin:0;padding-left:20px}
.divider{display:flex;align-items:center;gap:12px;margin:24px 0 16px;color:var(--muted);font-size:.9rem}
.divider::before,.divider::after{content:"";flex:1;border-top:1px solid var(--line)}
.sources{list-style:none;margin:0;padding:0}
.sources li+li{margin-top:8px}
.sources .btn{width:100%}
"""
