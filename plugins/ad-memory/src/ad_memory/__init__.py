"""ad-memory: memory-bank anomaly detection models (PaDiM, PatchCore, DFKDE) for ad-core.

The models live in `ad_memory.padim`, `ad_memory.patchcore` and `ad_memory.dfkde`; importing this
package imports none of them (nor torch), so the plugin registry stays fast.
"""

__version__ = "0.1.0"
