"""The web page: ``finerank ui`` or ``finerank serve --ui`` (mounted at ``/ui``).

Importing this package is light; gradio is imported when the page is built.
"""
