"""Byte-level checks of flow/fst_lz4, the literals-only LZ4 block encoder that lets Verilator write
FST traces without liblz4-dev. The encoder is compiled with gcc and loaded with ctypes; its output
is decoded by a small LZ4 block decoder written here from the format description."""

import ctypes
import random
import shutil
import subprocess
from pathlib import Path

import pytest

SHIM = Path(__file__).resolve().parent.parent / "flow" / "fst_lz4"
SIZES = (0, 1, 14, 15, 16, 269, 270, 300000)


def decode_block(block, expected_size):
    """Decode one LZ4 block; also return how many sequences it held."""
    out = bytearray()
    i = sequences = 0
    while True:
        token = block[i]
        i += 1
        sequences += 1
        n = token >> 4
        if n == 15:                       # literal length: 15 + bytes until one is below 255
            while True:
                b = block[i]
                i += 1
                n += b
                if b != 255:
                    break
        assert i + n <= len(block), "literals run past the end of the block"
        out += block[i:i + n]
        i += n
        if i == len(block):               # the last sequence ends after its literals
            break
        offset = block[i] | block[i + 1] << 8
        i += 2
        assert 0 < offset <= len(out), "match offset out of range"
        m = (token & 15) + 4
        if token & 15 == 15:
            while True:
                b = block[i]
                i += 1
                m += b
                if b != 255:
                    break
        for _ in range(m):                # byte by byte: a match may overlap its own output
            out.append(out[-offset])
    assert len(out) == expected_size
    return bytes(out), sequences


@pytest.fixture(scope="module")
def lz4(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the FST lz4 shim (flow/fst_lz4/lz4.c) cannot be compiled here")
    lib = tmp_path_factory.mktemp("lz4") / "liblz4shim.so"
    subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared",
                    str(SHIM / "lz4.c"), "-o", str(lib)], check=True)
    dll = ctypes.CDLL(str(lib))
    dll.LZ4_compressBound.argtypes = [ctypes.c_int]
    dll.LZ4_compressBound.restype = ctypes.c_int
    dll.LZ4_compress_default.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    dll.LZ4_compress_default.restype = ctypes.c_int
    return dll


def _literals_size(n):
    return 1 + n + ((n - 15) // 255 + 1 if n >= 15 else 0)


def _compress(lz4, data, capacity):
    dst = ctypes.create_string_buffer(capacity + 8)   # guard bytes after the capacity
    guard = b"\xa5" * 8
    ctypes.memmove(ctypes.addressof(dst) + capacity, guard, 8)
    n = lz4.LZ4_compress_default(data, dst, len(data), capacity)
    assert dst.raw[capacity:] == guard, "encoder wrote past dstCapacity"
    return n, dst.raw[:n]


@pytest.mark.parametrize("size", SIZES)
def test_roundtrip(lz4, size):
    data = random.Random(size).randbytes(size)
    bound = lz4.LZ4_compressBound(size)
    assert bound == size + size // 255 + 16
    n, block = _compress(lz4, data, bound)
    assert n == _literals_size(size)
    decoded, sequences = decode_block(block, size)
    assert decoded == data
    assert sequences == 1 and block[0] & 15 == 0          # one literals-only sequence
    assert block[0] >> 4 == min(size, 15)


def test_length_bytes(lz4):
    """The literal length's extension bytes, spelled out."""
    assert _compress(lz4, b"", 16)[1] == b"\x00"
    assert _compress(lz4, b"x" * 14, 32)[1][:1] == b"\xe0"
    assert _compress(lz4, b"x" * 15, 32)[1][:2] == b"\xf0\x00"
    assert _compress(lz4, b"x" * 269, 300)[1][:2] == b"\xf0\xfe"
    assert _compress(lz4, b"x" * 270, 300)[1][:3] == b"\xf0\xff\x00"
    assert _compress(lz4, b"x" * 525, 600)[1][:4] == b"\xf0\xff\xff\x00"


@pytest.mark.parametrize("size", SIZES)
def test_capacity_too_small(lz4, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    need = _literals_size(size)
    assert _compress(lz4, data, need - 1)[0] == 0
    assert _compress(lz4, data, need)[0] == need


def test_invalid_sizes(lz4):
    assert lz4.LZ4_compressBound(-1) == 0
    assert lz4.LZ4_compressBound(0x7E000001) == 0
    assert lz4.LZ4_compress_default(b"abc", ctypes.create_string_buffer(16), -1, 16) == 0


def test_header_links_from_cxx(tmp_path):
    """fstcpp_writer.cpp is C++: lz4.h's extern "C" guard must let it link against lz4.c."""
    gcc, gxx = shutil.which("gcc"), shutil.which("g++")
    if gcc is None or gxx is None:
        pytest.skip("gcc/g++ not found: cannot check that lz4.h links from C++")
    main = tmp_path / "main.cpp"
    main.write_text('#include <lz4.h>\nint main() { char d[32];\n'
                    '  return LZ4_compress_default("abc", d, 3, LZ4_compressBound(3)) == 4 ? 0 : 1; }\n')
    subprocess.run([gcc, "-c", "-O2", str(SHIM / "lz4.c"), "-o", str(tmp_path / "lz4.o")], check=True)
    exe = tmp_path / "main"
    subprocess.run([gxx, f"-I{SHIM}", str(main), str(tmp_path / "lz4.o"), "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0
