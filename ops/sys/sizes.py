"""The sizes bulk I/O moves bytes in, named once."""

MiB = 1 << 20

# The unit of bulk I/O: every read of an archive stream or a source file, every block a
# gatherer hands over (ops/sys/gather.py), every buffer of a file read or written whole.
# Each read, write, hash update or hand-over to another thread has a fixed cost (a call
# into Python and often the kernel, a trip through a queue); at 1 MiB it is small beside
# the bytes moved, and hashlib and file writes release the GIL on a buffer this large, so
# the threads beside the main one get real work. Larger buys little: the queues of blocks
# in flight (ops/sys/handover.py) hold a few of them per open file, and memory should stay
# a few MiB per file, whatever the file's size.
CHUNK = MiB
