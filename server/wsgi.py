"""The WSGI entry point gunicorn serves: `gunicorn -c server/gunicorn.conf.py server.wsgi:app`."""

from server.app import create_app

app = create_app()
