"""The notebook faces: the ``%%qimage`` magic (its arguments and subcommands), the panel, the live
gallery, and the kernel session they share. The only modules that import IPython or ipywidgets;
nothing outside this folder imports them (bar the package root's lazy names and
``load_ipython_extension``)."""
