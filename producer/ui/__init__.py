"""The web dashboard's static pages (HTML, CSS, ES modules) under `static/`, served by `sdq api` at `/ui`.

The route that serves them is `producer.api.ui`: this package holds data only, so it imports nothing.
"""
