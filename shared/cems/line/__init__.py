"""The LINE channel: webhook handling, account linking and delivery through the Messaging API."""
