"""The journal: every paid task in SQLite (``_store``, over ``_records``, ``_schema``, ``_files``),
the images on disk (content-addressed, with their provenance written into the file: ``_png_text``,
``_provenance``), the safety rules those files pass (``_images``), thumbnails and upload
preparation. Names no host."""
