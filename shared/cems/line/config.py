"""LINE constants: the documented local secrets, LINE's account-link page and call time-outs.

The LINE settings themselves (API URL, link pages, where the channel secret and access token are)
are read with every other setting in `cems.settings`.
"""

LOCAL_CHANNEL_SECRET = "local-channel-secret"  # noqa: S105 - the documented local default
LOCAL_CHANNEL_ACCESS_TOKEN = "local-channel-access-token"  # noqa: S105 - the documented local default
# LINE's account-link page; the user's LINE app opens it with linkToken and nonce.
LINE_ACCOUNT_LINK_URL = "https://access.line.me/dialog/bot/accountLink"
# Every LINE call has a time-out: (connect, read) seconds. The SDK has none by default.
LINE_REQUEST_TIMEOUT = (3.0, 10.0)
