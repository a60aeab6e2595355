"""The static files storage: hashed, compressed names once `collectstatic` has run."""

from django.conf import settings
from servestatic.storage import CompressedManifestStaticFilesStorage

KEPT_URLS = 1000  # names whose URL is kept: the templates' own {% static %} names, with room to spare


class HashedStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """Name files by their content hash from collectstatic's manifest; plain names when there is none yet.

    Without the fallback a process started before `collectstatic` (the tests, a first `runserver`)
    would fail every page on a missing manifest entry; `check --deploy` warns instead (chat.W005).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._urls = {}

    def stored_name(self, name):
        if not self.hashed_files:
            return name
        return super().stored_name(name)

    def url(self, name, force=False):
        """Return a file's URL, kept per name: `{% static %}` asks for the same few names on every page.

        It depends on the manifest (read when the storage is made, rewritten only by post_process,
        which forgets what was kept), STATIC_URL (a change of it makes a new storage) and DEBUG (part
        of the key).
        """
        key = (name, force, settings.DEBUG)
        url = self._urls.get(key)
        if url is None:
            url = super().url(name, force)
            if len(self._urls) < KEPT_URLS:
                self._urls[key] = url
        return url

    def post_process(self, *args, **kwargs):
        self._urls.clear()
        try:
            yield from super().post_process(*args, **kwargs)
        finally:
            self._urls.clear()
