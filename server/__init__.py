"""The prediction server: a Flask app (`create_app`) run by gunicorn (`gunicorn.conf.py`, `wsgi.py`)."""
