"""
The node's web page, its JSON API and event stream (twisted.web), and the
event hub the node emits into.  See docs/api.md.

Importing this package imports nothing: the node imports L{hub} alone,
and twisted.web is loaded only when the web server is on.
"""
