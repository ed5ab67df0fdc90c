"""Drop duplicate <script> entries from every page.

With jupyter-book 1.0.4, sphinx-thebe's ``env-before-read-docs`` hook runs twice, so its inline
config (``const THEBE_JS_URL = ...``) is added twice and the browser reports
"Identifier 'THEBE_JS_URL' has already been declared" on every page.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = (getattr(script, "filename", None) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: other handlers hold the same list


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
