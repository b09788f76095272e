"""Email: the dispatch model, suppression, composing the MIME message and sending it through SES v2.

See docs/email.md.
"""
