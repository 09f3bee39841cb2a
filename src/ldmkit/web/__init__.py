"""The local web UI of ldmkit (``ldmkit serve``): a FastAPI app and one static page (extra ``web``).

Importing ``ldmkit`` never imports this package; it needs ``pip install 'ldmkit[web]'``. See docs/web.md.
"""
