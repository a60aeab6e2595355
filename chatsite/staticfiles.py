"""The static files storage: hashed, compressed names once `collectstatic` has run."""

from servestatic.storage import CompressedManifestStaticFilesStorage


class HashedStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """Name files by their content hash from collectstatic's manifest; plain names when there is none yet.

    Without the fallback a process started before `collectstatic` (the tests, a first `runserver`)
    would fail every page on a missing manifest entry; `check --deploy` warns instead (chat.W005).
    """

    def stored_name(self, name):
        if not self.hashed_files:
            return name
        return super().stored_name(name)
