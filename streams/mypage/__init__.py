"""My Page: what a resident opens from the LINE rich menu to change their settings, pause, manage
contacts and read their recent history (streams/mypage/app.py). Mount it with `add_routes`."""
from streams.mypage.app import add_routes, create_app, mount

__all__ = ["add_routes", "create_app", "mount"]
