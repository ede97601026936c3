"""Reads lockstep checkpoints from Python, without lockstep or HDF5.

A checkpoint step directory holds metadata.json and one rank file per saving
rank; metadata.json says where every piece of every tensor lies in which rank
file, with its CRC-32C. This module reads the pieces, checks their checksums
and stitches each tensor, whole or saved as chunks of sharded state, to its
global shape:

    import lockstep_checkpoint as lc
    step = lc.open("lockstep-run/checkpoints")      # the newest step
    arrays = step.load()                            # {"model/fc0.weight": numpy array, ...}
    weights = step.state_dict("model")              # {"fc0.weight": torch.Tensor, ...}
    print(step.step, step.world_size, step.values)  # the saved key/values

bf16 tensors load as float32 numpy arrays (exactly: bf16 is the upper half of
a float32), or with bf16="bits" as their uint16 bits; state_dict() gives
torch.bfloat16. Everything read is checked: the metadata's own checksum, the
rank files' names and sizes, that the pieces tile each tensor, and each
piece's CRC-32C. Damage raises CheckpointError naming the file and the tensor.

Run as a script, it lists a checkpoint's tensors, or checks every byte with
--verify:  python3 python/lockstep_checkpoint.py DIR [--verify]
"""

import builtins
import json
import os
import re
import stat
import sys

import numpy as np

__all__ = ["CheckpointError", "Step", "open", "steps"]

FORMAT = "lockstep-checkpoint"
FORMAT_VERSION = 1
DTYPES = {
    "f32": np.dtype("<f4"),
    "f64": np.dtype("<f8"),
    "f16": np.dtype("<f2"),
    "bf16": np.dtype("<u2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "u8": np.dtype("u1"),
}
RANK_FILE = re.compile(r"rank-[0-9]{5,}\.h5")
STEP_DIR = re.compile(r"step-([0-9]+)")
READ_CHUNK = 8 << 20


class CheckpointError(Exception):
    """The checkpoint is missing, damaged or not lockstep's."""


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


try:  # Debian's python3-crc32c: the CPU's instruction
    import crc32c as _crc32c_module

    def crc32c(data, crc=0):
        return _crc32c_module.crc32c(data, crc)

except ImportError:  # a table, about 10 MB/s
    _TABLE = _crc32c_table()

    def crc32c(data, crc=0):
        crc ^= 0xFFFFFFFF
        for byte in bytes(data):
            crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
        return crc ^ 0xFFFFFFFF


def _field(document, key, kind, where):
    if key not in document or not isinstance(document[key], kind) or isinstance(document[key], bool):
        raise CheckpointError(f"{where}: '{key}' is missing or not a {kind.__name__}")
    return document[key]


def _count(document, key, where, limit=1 << 62):
    value = _field(document, key, int, where)
    if value < 0 or value > limit:
        raise CheckpointError(f"{where}: '{key}' is {value}, out of range")
    return value


def _open_regular(path):
    """`path` opened for reading, if it is a regular file: never through a
    symbolic link, and never blocking on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == getattr(os, "ELOOP", 40):
            raise CheckpointError(f"{path}: a symbolic link; lockstep never writes one") from error
        raise CheckpointError(f"{path}: {error.strerror}") from error
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return builtins.open(fd, "rb")


def steps(directory):
    """The committed steps in a checkpoint directory, oldest first."""
    found = []
    for name in os.listdir(directory):
        match = STEP_DIR.fullmatch(name)
        path = os.path.join(directory, name)
        if match and not os.path.islink(path) and os.path.isfile(os.path.join(path, "metadata.json")):
            found.append(int(match.group(1)))
    return sorted(found)


def open(path, step=None):  # noqa: A001 - the module's entry point reads like the builtin
    """The step directory `path`, or step `step` (default: the newest) of the
    checkpoint directory `path`."""
    if os.path.isfile(os.path.join(path, "metadata.json")) and step is None:
        return Step(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path} is not a directory")
    committed = steps(path)
    if not committed:
        raise CheckpointError(f"{path} holds no committed step (no step-N/metadata.json)")
    if step is None:
        step = committed[-1]
    elif step not in committed:
        raise CheckpointError(f"{path} has no step {step}; it has {committed}")
    return Step(os.path.join(path, f"step-{step}"))


class Tensor:
    """What the metadata says of one tensor."""

    def __init__(self, path, dtype, shape, sharded, pieces):
        self.path = path
        self.dtype = dtype
        self.shape = tuple(shape)
        self.sharded = sharded
        self.pieces = pieces  # (file, begin, count, offset, crc)

    @property
    def numel(self):
        count = 1
        for dimension in self.shape:
            count *= dimension  # Python integers: no overflow
        return count

    def __repr__(self):
        how = f"sharded, {len(self.pieces)} chunks" if self.sharded else f"{len(self.pieces)} pieces"
        return f"Tensor({self.path!r}, {self.dtype}, {list(self.shape)}, {how})"


class Step:
    """One committed step: its metadata checked, its tensors loaded on demand."""

    def __init__(self, step_dir):
        self.dir = step_dir
        where = os.path.join(step_dir, "metadata.json")
        if os.path.islink(step_dir) or os.path.islink(where):
            raise CheckpointError(f"{where}: a symbolic link; lockstep never writes one")
        with _open_regular(where) as handle:
            text = handle.read(64 << 20)
        try:
            document = json.loads(text)
        except ValueError as error:
            raise CheckpointError(f"{where} is not JSON: {error}") from error
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CheckpointError(f"{where} is not lockstep checkpoint metadata")
        version = _count(document, "format_version", where)
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{where} is of format version {version}; this reader knows up to "
                f"{FORMAT_VERSION}: use a newer lockstep")
        stored = _count(document, "checksum", where, 0xFFFFFFFF)
        body = dict(document)
        del body["checksum"]
        dumped = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if crc32c(dumped.encode()) != stored:
            raise CheckpointError(f"{where} fails its checksum")
        self.step = _count(document, "step", where)
        self.world_size = _count(document, "world_size", where, 1 << 31)
        self.values = _field(document, "values", dict, where)
        self.files = []
        for entry in _field(document, "rank_files", list, where):
            name = _field(entry, "name", str, where)
            if not RANK_FILE.fullmatch(name):
                raise CheckpointError(f"{where}: rank file name {name!r} is not rank-NNNNN.h5")
            self.files.append((name, _count(entry, "size", where)))
        self.tensors = {}
        for entry in _field(document, "tensors", list, where):
            self._add_tensor(entry, where)
        # No two pieces may share bytes of a file: with the files' sizes,
        # that bounds the elements the metadata can claim.
        extents = sorted((file, offset, offset + count * DTYPES[tensor.dtype].itemsize, path)
                         for path, tensor in self.tensors.items()
                         for file, _, count, offset, _ in tensor.pieces)
        for before, after in zip(extents, extents[1:]):
            if before[0] == after[0] and after[1] < before[2]:
                raise CheckpointError(
                    f"{where}: pieces of '{before[3]}' and '{after[3]}' overlap in "
                    f"{self.files[before[0]][0]}")

    def _add_tensor(self, entry, where):
        path = _field(entry, "path", str, where)
        if not path or any(ord(c) < 32 for c in path) or path in self.tensors:
            raise CheckpointError(f"{where}: tensor name {path!r} is empty, repeated or not text")
        dtype = _field(entry, "dtype", str, where)
        if dtype not in DTYPES:
            raise CheckpointError(f"{where}: tensor '{path}' has unknown dtype {dtype!r}")
        shape = [_count({"d": d}, "d", f"{where}: shape of '{path}'") for d in
                 _field(entry, "shape", list, where)]
        pieces = []
        for piece in _field(entry, "pieces", list, where):
            file = _count(piece, "file", where, len(self.files) - 1 if self.files else -1)
            if "offset" not in piece:
                raise CheckpointError(
                    f"{where}: tensor '{path}' does not record where its pieces lie (a "
                    "checkpoint of an older lockstep); open checkpoint.h5 with h5py instead")
            if _count(piece, "count", where) < 1:
                raise CheckpointError(f"{where}: a piece of '{path}' holds no element")
            pieces.append((file, _count(piece, "begin", where), _count(piece, "count", where),
                           _count(piece, "offset", where), _count(piece, "crc32c", where,
                                                                  0xFFFFFFFF)))
        tensor = Tensor(path, dtype, shape, entry.get("sharded") is True, pieces)
        # The pieces must tile the tensor: every element exactly once.
        covered = 0
        for _, begin, count, offset, _ in sorted(pieces, key=lambda p: p[1]):
            if begin != covered:
                raise CheckpointError(
                    f"{where}: the pieces of '{path}' leave a hole or overlap at element {covered}")
            covered += count
        if covered != tensor.numel:
            raise CheckpointError(
                f"{where}: the pieces of '{path}' hold {covered} elements, its shape {shape} "
                f"{tensor.numel}")
        element = DTYPES[dtype].itemsize
        for file, _, count, offset, _ in pieces:
            if offset + count * element > self.files[file][1]:
                raise CheckpointError(
                    f"{where}: a piece of '{path}' lies outside {self.files[file][0]}")
        self.tensors[path] = tensor

    def _open_file(self, file, handles):
        if file not in handles:
            name, size = self.files[file]
            path = os.path.join(self.dir, name)
            handle = _open_regular(path)
            actual = os.fstat(handle.fileno()).st_size
            if actual != size:
                handle.close()
                raise CheckpointError(f"{path} has {actual} bytes, the metadata says {size} "
                                      "(truncated?)")
            handles[file] = handle
        return handles[file]

    def read(self, path, bf16="float32"):
        """Tensor `path` as a numpy array of its global shape; bf16 as float32
        values, or bf16="bits" for their uint16 bits."""
        if path not in self.tensors:
            raise KeyError(f"no tensor {path!r} in {self.dir}")
        tensor = self.tensors[path]
        dtype = DTYPES[tensor.dtype]
        handles = {}
        try:
            # The files first: their real sizes (and pieces that never share
            # bytes) bound what the metadata may claim, before any memory is
            # taken for it.
            for file, _, _, _, _ in tensor.pieces:
                self._open_file(file, handles)
            flat = np.empty(tensor.numel, dtype=dtype)
            view = flat.view(np.uint8)
            for file, begin, count, offset, crc in tensor.pieces:
                handle = handles[file]
                start = begin * dtype.itemsize
                length = count * dtype.itemsize
                handle.seek(offset)
                got = handle.readinto(memoryview(view[start:start + length]))
                if got != length:
                    raise CheckpointError(f"{handle.name}: short read in tensor '{path}'")
                actual = 0
                for at in range(start, start + length, READ_CHUNK):
                    actual = crc32c(memoryview(view[at:min(at + READ_CHUNK, start + length)]),
                                    actual)
                if actual != crc:
                    raise CheckpointError(
                        f"{handle.name}: checksum mismatch in tensor '{path}', elements "
                        f"[{begin}, {begin + count})")
        finally:
            for handle in handles.values():
                handle.close()
        if tensor.dtype == "bf16" and bf16 != "bits":
            flat = np.left_shift(flat.astype(np.uint32), np.uint32(16)).view(np.float32)
        return flat.reshape(tensor.shape)

    def load(self, prefix="", bf16="float32"):
        """Every tensor whose name starts with `prefix`, by name."""
        return {path: self.read(path, bf16) for path in self.tensors if path.startswith(prefix)}

    def state_dict(self, group="model"):
        """The tensors of `group` ("model/...") as torch tensors keyed by the
        name under the group, bf16 as torch.bfloat16."""
        import torch

        result = {}
        for path in self.tensors:
            if not path.startswith(group + "/"):
                continue
            values = self.read(path, bf16="bits")
            if self.tensors[path].dtype == "bf16":
                tensor = torch.from_numpy(values.astype(np.int16)).view(torch.bfloat16)
            else:
                tensor = torch.from_numpy(values)
            result[path[len(group) + 1:]] = tensor
        if not result:
            raise KeyError(f"no tensor under '{group}/' in {self.dir}")
        return result


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    try:
        step = open(argv[1])
        print(f"{step.dir}: step {step.step}, saved by {step.world_size} ranks, "
              f"{len(step.tensors)} tensors")
        for tensor in step.tensors.values():
            print(f"  {tensor.path}  {tensor.dtype}{list(tensor.shape)}  "
                  f"{'sharded, %d chunks' % len(tensor.pieces) if tensor.sharded else 'whole'}")
        if "--verify" in argv[2:]:
            for path in step.tensors:
                step.read(path, bf16="bits")
            print("every piece passed its checksum")
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
