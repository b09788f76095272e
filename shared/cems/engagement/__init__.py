"""Engagement: signed tracking tokens, the click / open / unsubscribe endpoints and SES events."""
