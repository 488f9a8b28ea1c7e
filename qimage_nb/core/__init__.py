"""The core: the async client (a facade over small parts: submit and its outcome rules, waiting,
download, the journal cache, resume), its retry and polling policies, settings, the sync wrapper.

Host-neutral: every host detail lives in ``qimage_nb.providers``; no module here imports a face.
"""
