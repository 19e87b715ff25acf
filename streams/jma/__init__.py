"""JMA earthquake bulletins (気象庁防災情報XML): one bulletin read into a plain record (bulletin.py), and
the Atom feed that announces them (feed.py). Both are pure: bytes in, records out; fetching is the
caller's business."""
