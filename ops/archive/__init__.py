"""Archive writing and reading, behind one small interface the steps use.

``ArchiveWriter`` turns a stream of (name, content) into ``<policy>.tar[.zst|.gz]`` bytes
while hashing each member and the whole archive; ``read_archive`` streams the members
back with their SHA-256. How the tar bytes are produced is private to this package.
"""

from ops.archive.codec import EXTENSIONS, ArchiveError, ArchiveReader, ArchiveWriter

__all__ = ["EXTENSIONS", "ArchiveReader", "ArchiveWriter", "ArchiveError"]
