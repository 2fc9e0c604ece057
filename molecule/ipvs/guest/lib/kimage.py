"""Kernel/initrd helpers for the IPVS test guest (no external tools needed).

  kimage.py vmlinux BZIMAGE OUT   decompress a bzImage into its ELF vmlinux
  kimage.py cpio DIR OUT          pack DIR as a gzip'd newc cpio (initrd)
"""
import gzip
import lzma
import os
import stat
import sys
import zlib


def _try_xz(data, off):
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])


def _try_lzma(data, off):
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data[off:])


def _try_gzip(data, off):
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[off:])


def _try_zstd(data, off):
    import subprocess
    # check=False: a failed attempt gives no output and the next format is tried
    return subprocess.run(["zstd", "-dc"], input=data[off:], check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout


# Same magics as linux/scripts/extract-vmlinux.
FORMATS = [
    (b"\xfd7zXZ\x00", _try_xz),
    (b"\x1f\x8b\x08", _try_gzip),
    (b"\x28\xb5\x2f\xfd", _try_zstd),
    (b"\x5d\x00\x00\x00", _try_lzma),
]


def vmlinux(src, dst):
    data = open(src, "rb").read()
    for magic, fn in FORMATS:
        off = data.find(magic)
        while off != -1:
            try:
                out = fn(data, off)
            except Exception:
                out = b""
            if out[:4] == b"\x7fELF":
                tmp = dst + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(out)
                os.rename(tmp, dst)
                return 0
            off = data.find(magic, off + 1)
    sys.stderr.write("no ELF payload found in %s\n" % src)
    return 1


def cpio(root, dst):
    ino = [1000]

    def entry(out, name, st, body=b""):
        ino[0] += 1
        hdr = "070701" + "".join("%08X" % v for v in (
            ino[0], st.st_mode, 0, 0, 1 if not stat.S_ISDIR(st.st_mode) else 2,
            0, len(body), 0, 0, 0, 0, len(name) + 1, 0))
        buf = hdr.encode() + name.encode() + b"\0"
        buf += b"\0" * (-len(buf) % 4)
        buf += body + b"\0" * (-len(body) % 4)
        out.write(buf)

    with gzip.open(dst + ".tmp", "wb", compresslevel=6) as out:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for n in sorted(dirnames) + sorted(filenames):
                p = os.path.join(dirpath, n)
                rel = os.path.relpath(p, root)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    body = os.readlink(p).encode()
                elif stat.S_ISREG(st.st_mode):
                    body = open(p, "rb").read()
                else:
                    body = b""
                entry(out, rel, st, body)

        class _T:  # trailer
            st_mode = 0
        entry(out, "TRAILER!!!", _T())
    os.rename(dst + ".tmp", dst)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "vmlinux":
        sys.exit(vmlinux(sys.argv[2], sys.argv[3]))
    if len(sys.argv) == 4 and sys.argv[1] == "cpio":
        sys.exit(cpio(sys.argv[2], sys.argv[3]))
    sys.stderr.write(__doc__)
    sys.exit(2)
