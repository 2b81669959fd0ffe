"""The web UI under `/ui/`: the session cookie (`sessions`), the login and report
builder pages (`api`, `templates/`) and the files they load (`static/`)."""
