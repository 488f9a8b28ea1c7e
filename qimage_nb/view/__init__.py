"""Static rendering shared by every face and by the core: words, gallery HTML, the journal's table.

Nothing here imports IPython or ipywidgets, so ``Generation._repr_mimebundle_`` (core) can draw a
gallery without importing a notebook face. The faces in ``notebook/`` import this layer; this layer
imports only the contract, the exceptions and the journal's image helpers.
"""
