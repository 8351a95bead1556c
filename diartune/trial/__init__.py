"""The trial: data -> fine-tune -> pipeline -> DER. Needs the ``trial`` extra (torch, pyannote).

pyannote.audio 4 sends usage telemetry unless told not to; medical data sites are
often offline and must not call out, so it is switched off before pyannote loads.
"""

import os

os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
