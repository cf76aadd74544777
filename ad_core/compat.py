"""Does an installed plugin declare that it works with the running ad-core? (Its `ad-core` requirement.)

A plugin states the ad-core releases whose plugin API it was written for as an ordinary dependency,
`ad-core>=0.1,<0.2`; a plugin whose range excludes the running version is reported broken with that reason
instead of being loaded against an API it does not know.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from ad_core import __version__

CORE_DISTRIBUTION = "ad-core"


def core_requirement(dist: metadata.Distribution) -> Requirement | None:
    """The plugin's unconditional requirement on ad-core, if it declares one."""
    for line in dist.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name.lower().replace("_", "-") == CORE_DISTRIBUTION and requirement.marker is None:
            return requirement
    return None


def incompatibility(dist: metadata.Distribution, core_version: str = __version__) -> str | None:
    """Why the plugin cannot run on this ad-core, or None when its declared range admits it (or it names none)."""
    requirement = core_requirement(dist)
    if requirement is None or not str(requirement.specifier):
        return None
    if requirement.specifier.contains(Version(core_version), prereleases=True):
        return None
    return (f"requires ad-core{requirement.specifier}, but ad-core {core_version} is installed: install a "
            f"{dist.metadata['Name']} release made for ad-core {core_version}, or an ad-core in that range")
