"""Bastion's built-in identity provider: local users and how they prove who they are.

Storage of users lives in ``bastion.store`` (``UserStore``); this package owns what the
store must not know about, such as how passwords are hashed and checked.
"""
