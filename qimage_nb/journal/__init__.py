"""The journal: every paid task in SQLite, the images on disk (content-addressed, with their
provenance written into the file), and the image safety rules those files pass. Names no host."""
