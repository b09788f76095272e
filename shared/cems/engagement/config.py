"""Engagement constants: the documented local tracking secret and the local stack's engage URL.

The engagement settings themselves (base URL, where the signing secret is) are read with every
other setting in `cems.settings`.
"""

LOCAL_TRACKING_SECRET = "local-tracking-secret"  # noqa: S105 - the documented local default
LOCAL_ENGAGE_BASE_URL = "http://127.0.0.1:3000"
