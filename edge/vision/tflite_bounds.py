"""A .tflite file's structure checked against its length, before any runtime sees it.

tflite-runtime 2.14 (the 32-bit and Bookworm boards' runtime) hands a file to FlatBufferModel without
verifying it: a model cut short by a failed copy or a full SD card whose first bytes are intact kills the
process with SIGSEGV instead of raising (seen on arm64: `tests/board/board_user.py` probes it). ai-edge-litert
verifies and raises. This module walks the parts of the flatbuffer that a runtime follows at load time and
says, naming the part, where one points past the end of the file.

It checks bounds, not meaning: every table, vtable, vector and string the model's subgraphs, tensors,
operators, operator codes, buffers, metadata and signatures are made of lies inside the file, and every
tensor's buffer index names a buffer.
A file that passes may still be refused by the runtime, with the runtime's own error.

Layout (the FlatBuffers binary format, little-endian): the file starts with a uint32 offset to the root
table (the TFLite `Model`); a table starts with an int32 whose subtraction from the table's position gives
its vtable; a vtable is uint16 vtable size, uint16 table size, then one uint16 offset per field (0: field
absent), counted from the table's start; a vector or string field holds a uint32 offset, counted from the
field itself, to a uint32 length followed by the elements (a vector of tables: uint32 offsets, each counted
from its own position; a string: a vector of bytes and a NUL). Field slots are TFLite's schema.fbs: Model
(operator_codes, subgraphs, description, buffers, metadata_buffer, metadata, signature_defs), SubGraph
(tensors, inputs, outputs, operators, name), Tensor (shape, buffer, name), Operator (inputs, outputs),
Buffer (data; offset and size of data stored after the flatbuffer, for models over 2 GB), Metadata (name).
"""

from __future__ import annotations

import struct

# Field index in each table (schema.fbs); a field's vtable slot is 4 + 2 * index.
MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_DESCRIPTION, MODEL_BUFFERS = 1, 2, 3, 4
MODEL_METADATA_BUFFER, MODEL_METADATA, MODEL_SIGNATURE_DEFS = 5, 6, 7
METADATA_NAME = 0
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS, SUBGRAPH_NAME = 0, 1, 2, 3, 4
TENSOR_SHAPE, TENSOR_BUFFER, TENSOR_NAME = 0, 2, 3
OPERATOR_INPUTS, OPERATOR_OUTPUTS = 1, 2
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2


class Truncated(ValueError):
    """A part of the model lies (partly) past the end of the file; the message names the part."""


class _Reader:
    def __init__(self, data: bytes | memoryview):
        self.data = data
        self.size = len(data)

    def need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise Truncated(f"{what} at byte {pos} (+{length}) lies past the end of the file ({self.size} bytes)")

    def u16(self, pos: int, what: str) -> int:
        self.need(pos, 2, what)
        return struct.unpack_from("<H", self.data, pos)[0]

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return struct.unpack_from("<I", self.data, pos)[0]

    def table(self, pos: int, what: str) -> _Table:
        self.need(pos, 4, what)
        vtable = pos - struct.unpack_from("<i", self.data, pos)[0]
        size = self.u16(vtable, f"{what}'s vtable")
        self.need(vtable, size, f"{what}'s vtable")
        self.need(pos, self.u16(vtable + 2, f"{what}'s vtable"), what)
        return _Table(self, pos, vtable, size, what)


class _Table:
    def __init__(self, reader: _Reader, pos: int, vtable: int, vtable_size: int, what: str):
        self.r, self.pos, self.vtable, self.vtable_size, self.what = reader, pos, vtable, vtable_size, what

    def field(self, index: int) -> int:
        """The field's position in the file, or 0 when the table does not have it."""
        slot = 4 + 2 * index
        if slot + 2 > self.vtable_size:
            return 0
        offset = self.r.u16(self.vtable + slot, f"{self.what}'s vtable")
        return self.pos + offset if offset else 0

    def vector(self, index: int, element_size: int, name: str) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        at = self.field(index)
        if not at:
            return 0, 0
        what = f"{self.what}.{name}"
        start = at + self.r.u32(at, what)
        length = self.r.u32(start, what)
        self.r.need(start + 4, length * element_size, what)
        return start + 4, length

    def string(self, index: int, name: str) -> None:
        """A string field: its bytes and the NUL after them lie inside the file."""
        start, length = self.vector(index, 1, name)
        if start:
            self.r.need(start, length + 1, f"{self.what}.{name}")

    def tables(self, index: int, name: str) -> list[_Table]:
        start, length = self.vector(index, 4, name)
        return [self.r.table(start + 4 * i + self.r.u32(start + 4 * i, f"{self.what}.{name}[{i}]"),
                             f"{self.what}.{name}[{i}]") for i in range(length)]

    def u32(self, index: int) -> int:
        at = self.field(index)
        return self.r.u32(at, f"{self.what} field {index}") if at else 0

    def u64(self, index: int) -> int:
        at = self.field(index)
        if not at:
            return 0
        self.r.need(at, 8, f"{self.what} field {index}")
        return struct.unpack_from("<Q", self.r.data, at)[0]


def check_bounds(data: bytes | memoryview) -> None:
    """Raise Truncated naming the first part of the model that lies past the end of `data` (a whole .tflite
    file), or a tensor whose buffer index names no buffer."""
    r = _Reader(data)
    model = r.table(r.u32(0, "root offset"), "model")
    model.tables(MODEL_OPERATOR_CODES, "operator_codes")
    model.string(MODEL_DESCRIPTION, "description")
    model.vector(MODEL_METADATA_BUFFER, 4, "metadata_buffer")
    for metadata in model.tables(MODEL_METADATA, "metadata"):
        metadata.string(METADATA_NAME, "name")
    model.tables(MODEL_SIGNATURE_DEFS, "signature_defs")
    buffers = model.tables(MODEL_BUFFERS, "buffers")
    for buffer in buffers:
        buffer.vector(BUFFER_DATA, 1, "data")
        offset, size = buffer.u64(BUFFER_OFFSET), buffer.u64(BUFFER_SIZE)
        if offset > 1:  # 0 and 1 mean "no data outside the flatbuffer" in schema.fbs
            r.need(offset, size, f"{buffer.what}'s data")
    for subgraph in model.tables(MODEL_SUBGRAPHS, "subgraphs"):
        subgraph.string(SUBGRAPH_NAME, "name")
        for index, name in ((SUBGRAPH_INPUTS, "inputs"), (SUBGRAPH_OUTPUTS, "outputs")):
            subgraph.vector(index, 4, name)
        for tensor in subgraph.tables(SUBGRAPH_TENSORS, "tensors"):
            tensor.vector(TENSOR_SHAPE, 4, "shape")
            tensor.string(TENSOR_NAME, "name")
            named = tensor.u32(TENSOR_BUFFER)
            if named >= max(len(buffers), 1):
                raise Truncated(f"{tensor.what}: buffer {named} of {len(buffers)}: the file is cut short or not a "
                                "model")
        for operator in subgraph.tables(SUBGRAPH_OPERATORS, "operators"):
            operator.vector(OPERATOR_INPUTS, 4, "inputs")
            operator.vector(OPERATOR_OUTPUTS, 4, "outputs")
