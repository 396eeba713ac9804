"""The operations console: web pages at /ui/ for the person on call (queues, jobs, dead letters,
workers, enqueueing), served by the API process, rendered on the server (Jinja2), with htmx
(vendored under static/vendor/) only for refreshing parts of a page. `routes.py` lists them."""
