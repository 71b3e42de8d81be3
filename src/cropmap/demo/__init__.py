"""The embedded demo: a seeded synthetic scene in the real on-disk formats, and the end-to-end run."""
