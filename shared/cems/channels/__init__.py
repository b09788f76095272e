"""Channels as plugins: the plugin shape (`plugin`) and the registry of every channel (`registry`)."""
