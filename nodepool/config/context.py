# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The context handed to drivers while they build provider configs."""

from nodepool.config.errors import Problem, describe_value


class BuildContext:
    """What provider builders need from the rest of the config.

    ``labels`` and ``diskimages`` are the finished top-level mappings;
    ``env`` is the environment the file was loaded with.  Builders report
    cross-reference problems with :meth:`problem` (or the ``require_*``
    helpers) and carry on, so that every problem gets reported at once.
    """

    def __init__(self, labels, diskimages, env):
        self.labels = labels
        self.diskimages = diskimages
        self.env = env
        self.problems = []

    def problem(self, path, expected, found):
        self.problems.append(Problem(tuple(path), expected, found))

    def require_label(self, name, path):
        """Report ``name`` unless it is a top-level label."""
        if name not in self.labels:
            self.problem(path, "a label defined in the top-level labels",
                         describe_value(name))

    def require_diskimage(self, name, path):
        """The top-level diskimage ``name`` (None, reported, if unusable)."""
        image = self.diskimages.get(name)
        if image is None:
            self.problem(path, "a diskimage defined in the top-level "
                         "diskimages", describe_value(name))
        elif image.abstract:
            self.problem(path, "a diskimage that is not abstract",
                         "%r, which is abstract" % name)
            image = None
        return image

    def require_member(self, name, names, what, path):
        """Report ``name`` unless it is in ``names`` (a provider's list)."""
        if name not in names:
            self.problem(path, "%s listed by this provider" % what,
                         describe_value(name))
