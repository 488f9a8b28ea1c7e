"""Pure rendering: static HTML and plain text made from images and results, for any face.

Nothing here imports IPython or ipywidgets: a face (``notebook/``) shows what these modules make,
and ``Generation`` or a batch's results can draw themselves without importing a face.
"""
