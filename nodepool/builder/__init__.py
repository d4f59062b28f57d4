# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""nodepool-builder: build diskimages with DIB, upload them, clean up.

* :mod:`.server` — :class:`NodePoolBuilder`, the daemon's core;
* :mod:`.build_worker`, :mod:`.upload_worker`, :mod:`.cleanup` — the
  worker threads;
* :mod:`.dib` — DIB command line, environment, run and on-disk files;
* :mod:`.common` — config helpers, the worker loop, shared adapters.
"""
