"""The member's console: a local web UI served by the member's own Tandem install.

It never runs on the server, so a compromised server cannot ship it different code. All
decoding, checking, signing and resealing happen in the member-side modules
(``tandem.client*``); the console only renders what they established and forwards a
person's decisions to them. See docs/console.md.
"""
