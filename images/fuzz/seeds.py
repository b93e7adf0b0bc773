#!/usr/bin/env python3
"""Seed corpus tools for the VHDX fuzz targets (called by scripts/fuzz-vhdx).

Subcommands:
  raw OUT SIZE_MIB SEED         write a raw disk of SIZE_MIB holding a few KiB of
                                pseudo-random data in its first 8 MiB (the same bytes
                                for the same SEED)
  dirty-log IN OUT              copy a VHDX and give it a dirty log of two entries that
                                rewrite a BAT sector and zero 4 KiB of the metadata region
  flood-log IN OUT              copy a VHDX made with a large log and fill its log with
                                fake entry headers (each claiming the whole log, with a
                                wrong checksum), a real two-entry sequence among them
  partial IN OUT                copy a differencing VHDX and make block 0 partially
                                present (a sector bitmap with a few sectors set)
  pack [--as-is] DIR FILE...    write each VHDX as a packed vhdx_reader input (see
                                images/fuzz/src/lib.rs) into DIR; the inputs ask for their
                                checksums to be recomputed unless --as-is
  structures DIR FILE...        cut each VHDX into vhdx_structures inputs into DIR

Only the standard library: the machine's python3 is enough.
"""

import random
import struct
import sys
from pathlib import Path

MIB = 1 << 20
SECTOR = 4096
HEADER_OFFSETS = (64 * 1024, 128 * 1024)
REGION_TABLE_OFFSETS = (192 * 1024, 256 * 1024)
REGION_TABLE_SIZE = 64 * 1024
METADATA_TABLE_SIZE = 64 * 1024
# On-disk (mixed-endian) GUID bytes, from MS-VHDX.
REGION_BAT = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")
REGION_METADATA = bytes.fromhex("06a27c8b90479a4bb8fe575f050f886e")
ITEM_FILE_PARAMETERS = bytes.fromhex("3767a1ca36fa434db3b633f0aa44e76b")
ITEM_PARENT_LOCATOR = bytes.fromhex("2d5fd3a80bb34d45abf7d3d84834ab0c")
LOG_GUID = bytes(range(0x10, 0x20))
PACKED_MAGIC = b"VXPK"
FLAG_RESEAL = 1
# Zero runs shorter than this stay inside a record (a record header costs 6 bytes).
PACK_GAP = 32
MAX_RECORD = 0xFFFF

# Decoder numbers of vhdx_structures.
IDENTIFIER, HEADER, REGION_TABLE, METADATA_TABLE = 0, 1, 2, 3
FILE_PARAMETERS, PARENT_LOCATOR, LOG, GEOMETRY = 4, 5, 6, 7


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def seal(buf, start, length):
    """Stores the CRC-32C of buf[start:start+length] (checksum field zeroed) at start+4."""
    buf[start + 4:start + 8] = b"\0\0\0\0"
    struct.pack_into("<I", buf, start + 4, crc32c(bytes(buf[start:start + length])))


def header(buf):
    """The current header's (offset, log_length, log_offset)."""
    best = None
    for off in HEADER_OFFSETS:
        seq = struct.unpack_from("<Q", buf, off + 8)[0]
        if buf[off:off + 4] == b"head" and (best is None or seq > best[0]):
            best = (seq, off)
    off = best[1]
    log_length, log_offset = struct.unpack_from("<IQ", buf, off + 68)
    return off, log_length, log_offset


def regions(buf):
    """{guid: (file_offset, length)} from the first region table."""
    rt = REGION_TABLE_OFFSETS[0]
    count = struct.unpack_from("<I", buf, rt + 8)[0]
    out = {}
    for i in range(count):
        guid, offset, length, _ = struct.unpack_from("<16sQII", buf, rt + 16 + 32 * i)
        out[bytes(guid)] = (offset, length)
    return out


def metadata_item(buf, item):
    """(file offset, length) of a metadata item, or None."""
    meta = regions(buf)[REGION_METADATA][0]
    count = struct.unpack_from("<H", buf, meta + 10)[0]
    for i in range(count):
        guid, offset, length, _ = struct.unpack_from("<16sIII", buf, meta + 32 + 32 * i)
        if bytes(guid) == item:
            return meta + offset, length
    return None


def cmd_raw(out, size_mib, seed):
    rng = random.Random(int(seed))
    size = int(size_mib) * MIB
    with open(out, "wb") as f:
        f.truncate(size)
        # A few scattered 1-4 KiB chunks: enough to allocate some blocks, not enough to
        # make the packed seeds large; kept to the first 8 MiB so that even 32 MiB blocks
        # allocate only one block and the file stays under the fuzzer's size limit.
        for _ in range(4):
            at = rng.randrange(0, min(size, 8 * MIB) // SECTOR) * SECTOR
            f.seek(at)
            f.write(rng.randbytes(rng.choice((1024, 2048, 4096))))


def log_entry(sequence, tail, file_size, writes):
    """One log entry; writes are ("zero", offset, length) or ("data", offset, sector)."""
    descriptors = len(writes)
    desc_area = -(-(64 + 32 * descriptors) // SECTOR) * SECTOR
    data_sectors = [w for w in writes if w[0] == "data"]
    length = desc_area + SECTOR * len(data_sectors)
    buf = bytearray(length)
    buf[0:4] = b"loge"
    struct.pack_into("<IIQI", buf, 8, length, tail, sequence, descriptors)
    buf[32:48] = LOG_GUID
    struct.pack_into("<QQ", buf, 48, file_size, file_size)
    data_at = desc_area
    for i, write in enumerate(writes):
        d = 64 + 32 * i
        if write[0] == "zero":
            buf[d:d + 4] = b"zero"
            struct.pack_into("<QQQ", buf, d + 8, write[2], write[1], sequence)
        else:
            sector = write[2]
            buf[d:d + 4] = b"desc"
            buf[d + 4:d + 8] = sector[4092:4096]
            buf[d + 8:d + 16] = sector[0:8]
            struct.pack_into("<QQ", buf, d + 16, write[1], sequence)
            buf[data_at:data_at + 4] = b"data"
            struct.pack_into("<I", buf, data_at + 4, sequence >> 32)
            buf[data_at + 8:data_at + 4092] = sector[8:4092]
            struct.pack_into("<I", buf, data_at + 4092, sequence & 0xFFFFFFFF)
            data_at += SECTOR
    seal(buf, 0, length)
    return buf


def cmd_dirty_log(src, out):
    buf = bytearray(Path(src).read_bytes())
    _, log_length, log_offset = header(buf)
    bat = regions(buf)[REGION_BAT][0]
    meta = regions(buf)[REGION_METADATA][0]
    size = len(buf)
    first = log_entry(7, 0, size, [
        ("data", bat, bytes(buf[bat:bat + SECTOR])),
        ("zero", meta + MIB // 2, SECTOR),
    ])
    second = log_entry(8, 0, size, [("zero", meta + MIB // 2 + SECTOR, SECTOR)])
    buf[log_offset:log_offset + log_length] = bytes(log_length)
    buf[log_offset:log_offset + len(first)] = first
    at = log_offset + len(first)
    buf[at:at + len(second)] = second
    for off in HEADER_OFFSETS:
        if buf[off:off + 4] == b"head":
            buf[off + 48:off + 64] = LOG_GUID
            seal(buf, off, SECTOR)
    Path(out).write_bytes(buf)


def cmd_flood_log(src, out):
    buf = bytearray(Path(src).read_bytes())
    _, log_length, log_offset = header(buf)
    bat = regions(buf)[REGION_BAT][0]
    meta = regions(buf)[REGION_METADATA][0]
    size = len(buf)
    # Every sector passes the cheap checks of an entry header (signature, a length of the
    # whole log, tail 0, a sequence number, no descriptors, the LogGuid); its checksum, left
    # zero, is wrong. Summing each one's checksum from its bytes would cost sectors × log
    # bytes: 8192 × 32 MiB for a 32 MiB log.
    for s in range(log_length // SECTOR):
        at = log_offset + s * SECTOR
        buf[at:at + SECTOR] = bytes(SECTOR)
        buf[at:at + 4] = b"loge"
        struct.pack_into("<IIQI", buf, at + 8, log_length, 0, 1_000_000 + s, 0)
        buf[at + 32:at + 48] = LOG_GUID
    # The real sequence, in the middle, naming its first entry as the tail.
    hidden = log_length // 2
    first = log_entry(7, hidden, size, [
        ("data", bat, bytes(buf[bat:bat + SECTOR])),
        ("zero", meta + MIB // 2, SECTOR),
    ])
    second = log_entry(8, hidden, size, [("zero", meta + MIB // 2 + SECTOR, SECTOR)])
    at = log_offset + hidden
    buf[at:at + len(first)] = first
    at += len(first)
    buf[at:at + len(second)] = second
    for off in HEADER_OFFSETS:
        if buf[off:off + 4] == b"head":
            buf[off + 48:off + 64] = LOG_GUID
            seal(buf, off, SECTOR)
    Path(out).write_bytes(buf)


def cmd_partial(src, out):
    buf = bytearray(Path(src).read_bytes())
    bat = regions(buf)[REGION_BAT][0]
    # Differencing disks with 512-byte sectors and 1 MiB blocks: 4096 blocks per chunk,
    # then the chunk's sector-bitmap entry.
    params_at, _ = metadata_item(buf, ITEM_FILE_PARAMETERS)
    block_size = struct.unpack_from("<I", buf, params_at)[0]
    chunk_ratio = (1 << 23) * 512 // block_size
    end = -(-len(buf) // MIB) * MIB
    buf.extend(bytes(end - len(buf)))
    payload, bitmap = end, end + block_size
    buf.extend(bytes(block_size + MIB))
    rng = random.Random(7)
    buf[payload:payload + 8 * 512] = rng.randbytes(8 * 512)
    buf[bitmap] = 0b1010_0101
    struct.pack_into("<Q", buf, bat, payload | 7)  # PAYLOAD_BLOCK_PARTIALLY_PRESENT
    struct.pack_into("<Q", buf, bat + 8 * chunk_ratio, bitmap | 6)  # SB_BLOCK_PRESENT
    Path(out).write_bytes(buf)


def records(data):
    """(offset, bytes) runs of non-zero data, split where PACK_GAP or more zeros lie."""
    out = []
    i, n = 0, len(data)
    while i < n:
        while i < n and data[i] == 0:
            i += 1
        if i == n:
            break
        start, end, zeros = i, i, 0
        while end < n and end - start < MAX_RECORD and zeros < PACK_GAP:
            zeros = zeros + 1 if data[end] == 0 else 0
            end += 1
        end -= zeros
        out.append((start, data[start:end]))
        i = end
    return out


def cmd_pack(args):
    as_is = args[:1] == ["--as-is"]
    if as_is:
        args = args[1:]
    outdir, files = Path(args[0]), args[1:]
    outdir.mkdir(parents=True, exist_ok=True)
    for name in files:
        data = Path(name).read_bytes()
        packed = bytearray(PACKED_MAGIC)
        packed += struct.pack("<BQ", 0 if as_is else FLAG_RESEAL, len(data))
        for offset, chunk in records(data):
            packed += struct.pack("<IH", offset, len(chunk)) + chunk
        (outdir / f"packed-{Path(name).stem}").write_bytes(packed)


def trim(data):
    return data.rstrip(b"\0")


def cmd_structures(outdir, files):
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name in files:
        buf = Path(name).read_bytes()
        stem = Path(name).stem
        seeds = {}
        hoff, log_length, log_offset = header(buf)
        seeds["identifier"] = bytes([IDENTIFIER, 0]) + buf[:520]
        seeds["header"] = bytes([HEADER, 0]) + buf[hoff:hoff + SECTOR]
        seeds["header-sealed"] = bytes([HEADER, FLAG_RESEAL]) + trim(buf[hoff:hoff + SECTOR])
        rt = REGION_TABLE_OFFSETS[0]
        seeds["region-table"] = bytes([REGION_TABLE, FLAG_RESEAL]) + trim(
            buf[rt:rt + REGION_TABLE_SIZE])
        meta, meta_len = regions(buf)[REGION_METADATA]
        seeds["metadata-table"] = (bytes([METADATA_TABLE, FLAG_RESEAL])
                                   + struct.pack("<Q", meta_len)
                                   + trim(buf[meta:meta + METADATA_TABLE_SIZE]))
        at, length = metadata_item(buf, ITEM_FILE_PARAMETERS)
        seeds["file-parameters"] = bytes([FILE_PARAMETERS, 0]) + buf[at:at + length]
        locator = metadata_item(buf, ITEM_PARENT_LOCATOR)
        if locator:
            at, length = locator
            seeds["parent-locator"] = bytes([PARENT_LOCATOR, 0]) + buf[at:at + length]
        log_guid = buf[hoff + 48:hoff + 64]
        if any(log_guid):
            log = buf[log_offset:log_offset + log_length]
            used = len(trim(log)) + SECTOR - 1
            seeds["log"] = bytes([LOG, FLAG_RESEAL]) + log_guid + log[:used // SECTOR * SECTOR]
        for name_, data in seeds.items():
            (outdir / f"{stem}-{name_}").write_bytes(data)
    geometries = {
        "geometry-dynamic": (4 * MIB, MIB, 512, 0),
        "geometry-differencing": (64 << 30, 32 * MIB, 4096, 1),
        "geometry-largest": (64 << 40, 256 * MIB, 512, 1),
    }
    for name_, fields in geometries.items():
        (outdir / name_).write_bytes(bytes([GEOMETRY, 0]) + struct.pack("<QIIB", *fields))


def main(argv):
    commands = {
        "raw": lambda a: cmd_raw(*a),
        "dirty-log": lambda a: cmd_dirty_log(*a),
        "flood-log": lambda a: cmd_flood_log(*a),
        "partial": lambda a: cmd_partial(*a),
        "pack": cmd_pack,
        "structures": lambda a: cmd_structures(a[0], a[1:]),
    }
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    commands[argv[1]](argv[2:])


if __name__ == "__main__":
    main(sys.argv)
