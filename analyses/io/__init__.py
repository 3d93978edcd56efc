"""Everything cotscope writes and reads on disk: numpy in, files out (no models, no figures).

* :mod:`.atomic` — atomic file and folder writes.
* :mod:`.resumable` — the one resumable-writer protocol (header, append-only unit log, writer lock).
* :mod:`.lock` — the advisory writer lock; :mod:`.verify` — first-read sha256 verification.
* :mod:`.tensorfile` — safetensors files written/read with numpy and ``preadv`` (bfloat16 included).
* :mod:`.store` — the activation store (format v2); :mod:`.merge` and :mod:`.migrate` combine and convert stores.
* :mod:`.attention_runs` — attention-capture runs; :mod:`.tables` — sweep and evaluation tables.
"""
