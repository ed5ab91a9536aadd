#!/usr/bin/env python3
"""Build the drove-server wheel: the `drove` binary as a pip-installable script.

Usage: build_wheel.py BINARY [--version V] [--out-dir DIR] [--strip debug|all|none]
                             [--platform-tag TAG]

Writes DIR/drove_server-V-py3-none-PLATFORM.whl (PEP 427) and prints its path on stdout (what
it found on the way goes to stderr). V defaults to `[workspace.package] version` of the
workspace Cargo.toml, as a PEP 440 version. PLATFORM comes from the binary itself (its ELF
machine, its interpreter, the libraries it needs and the highest symbol versions it needs from
them): `manylinux_X_Y_ARCH` only if the binary meets the manylinux rules for glibc X.Y,
otherwise the plain `linux_ARCH`. A --platform-tag the binary does not meet is refused.

Standard library only, Python 3.8+.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

DIST_NAME = "drove-server"  # the project name (METADATA Name)
SUMMARY = "The drove binary (durable jobs: server, workers, CLI) for Python environments"
LICENSE = "MIT OR Apache-2.0"
REQUIRES_PYTHON = ">=3.9"
PACKAGE_FILES = ("__init__.py", "__main__.py", "py.typed")  # drove_server/ in this directory
GENERATOR = "drove build_wheel.py"

# ---------------------------------------------------------------------------------------------
# Version


def cargo_workspace_version(cargo_toml: Path) -> str:
    """`version` of `[workspace.package]` in the workspace Cargo.toml."""
    text = cargo_toml.read_text(encoding="utf-8")
    try:
        import tomllib  # Python 3.11+

        return str(tomllib.loads(text)["workspace"]["package"]["version"])
    except ImportError:
        pass
    except KeyError:
        raise SystemExit(f"build_wheel: no [workspace.package] version in {cargo_toml}")
    section = None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.fullmatch(r'version\s*=\s*"([^"]+)"', line)
        if m and section == "workspace.package":
            return m.group(1)
    raise SystemExit(f"build_wheel: no [workspace.package] version in {cargo_toml}")


PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def pep440_version(cargo_version: str) -> str:
    """A Cargo (SemVer) version as a normalised PEP 440 version: 1.2.3-rc.1 -> 1.2.3rc1."""
    m = re.fullmatch(r"(\d+\.\d+\.\d+)(?:-(alpha|beta|rc)(?:\.(\d+))?)?", cargo_version)
    if not m:
        raise SystemExit(
            f"build_wheel: cannot express Cargo version {cargo_version!r} as a PEP 440 version "
            "(only X.Y.Z and X.Y.Z-alpha|beta|rc[.N] are mapped); pass --version"
        )
    release, pre, n = m.groups()
    version = release + ({"alpha": "a", "beta": "b", "rc": "rc"}[pre] + (n or "0") if pre else "")
    assert PEP440.match(version), version
    return version


# ---------------------------------------------------------------------------------------------
# ELF: what the binary needs from the system (standard library only: struct)

EM_ARCH = {3: "i686", 62: "x86_64", 183: "aarch64", 40: "armv7l", 22: "s390x", 243: "riscv64"}
PT_INTERP, SHT_DYNAMIC, SHT_DYNSYM, SHT_GNU_VERNEED = 3, 6, 11, 0x6FFFFFFE
DT_NEEDED = 1


class Elf:
    """The parts of an ELF executable that decide its platform tag."""

    def __init__(self, path: Path):
        data = path.read_bytes()
        if data[:4] != b"\x7fELF":
            raise SystemExit(f"build_wheel: {path} is not an ELF executable")
        bits = {1: 32, 2: 64}[data[4]]
        end = {1: "<", 2: ">"}[data[5]]
        self.bits = bits
        self.machine = struct.unpack_from(end + "H", data, 18)[0]
        if bits == 64:
            phoff, shoff = struct.unpack_from(end + "QQ", data, 32)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 54)
        else:
            phoff, shoff = struct.unpack_from(end + "II", data, 28)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 42)
        arch = EM_ARCH.get(self.machine)
        if self.machine == 21:  # EM_PPC64
            arch = "ppc64le" if end == "<" else "ppc64"
        self.arch = arch

        self.interpreter: str | None = None
        for i in range(phnum):
            off = phoff + i * phentsize
            p_type = struct.unpack_from(end + "I", data, off)[0]
            if p_type != PT_INTERP:
                continue
            if bits == 64:
                p_offset, _, _, p_filesz = struct.unpack_from(end + "QQQQ", data, off + 8)
            else:
                p_offset, _, _, p_filesz = struct.unpack_from(end + "IIII", data, off + 4)
            self.interpreter = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()

        sections = []
        for i in range(shnum):
            off = shoff + i * shentsize
            if bits == 64:
                _, sh_type, _, _, sh_offset, sh_size, sh_link, sh_info = struct.unpack_from(
                    end + "IIQQQQII", data, off
                )
            else:
                _, sh_type, _, _, sh_offset, sh_size, sh_link, sh_info = struct.unpack_from(
                    end + "IIIIIIII", data, off
                )
            sections.append((sh_type, sh_offset, sh_size, sh_link, sh_info))

        def cstr(strtab: int, offset: int) -> str:
            start = sections[strtab][1] + offset
            return data[start : data.index(b"\0", start)].decode()

        self.needed: list[str] = []  # DT_NEEDED
        self.versions: dict[str, set[str]] = {}  # verneed: library -> version names
        self.undefined: set[str] = set()  # undefined dynamic symbols
        for sh_type, sh_offset, sh_size, sh_link, sh_info in sections:
            if sh_type == SHT_DYNAMIC:
                fmt, size = (end + "qQ", 16) if bits == 64 else (end + "iI", 8)
                for off in range(sh_offset, sh_offset + sh_size, size):
                    tag, val = struct.unpack_from(fmt, data, off)
                    if tag == 0:
                        break
                    if tag == DT_NEEDED:
                        self.needed.append(cstr(sh_link, val))
            elif sh_type == SHT_GNU_VERNEED:
                off = sh_offset
                for _ in range(sh_info):
                    _, cnt, file_, aux, nxt = struct.unpack_from(end + "HHIII", data, off)
                    lib = cstr(sh_link, file_)
                    a = off + aux
                    for _ in range(cnt):
                        _, _, _, name, anext = struct.unpack_from(end + "IHHII", data, a)
                        self.versions.setdefault(lib, set()).add(cstr(sh_link, name))
                        a += anext
                    if nxt == 0:
                        break
                    off += nxt
            elif sh_type == SHT_DYNSYM:
                fmt, size = (end + "IBBHQQ", 24) if bits == 64 else (end + "IIIBBH", 16)
                for off in range(sh_offset, sh_offset + sh_size, size):
                    fields = struct.unpack_from(fmt, data, off)
                    name, shndx = fields[0], fields[3] if bits == 64 else fields[5]
                    if name and shndx == 0:
                        self.undefined.add(cstr(sh_link, name))


# The manylinux rules (PEP 600, as auditwheel's policy checks them), for the only part of them a
# Rust executable meets: libraries every manylinux system has (glibc's own and libgcc_s) and
# symbol versions of glibc and libgcc_s. Anything else (libssl, libstdc++, musl, a static
# binary...) gets the plain linux_ARCH tag rather than a claim we did not check.
MANYLINUX_LIBS = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libutil.so.1",
    "libresolv.so.2", "libanl.so.1", "libgcc_s.so.1",
}  # fmt: skip
# The oldest manylinux_2_Y whose policy allows each GCC_ symbol version of libgcc_s
# (auditwheel's manylinux-policy.json).
GCC_MIN_GLIBC = {
    "x86_64": {
        "3.0": 5, "3.3": 5, "3.3.1": 5, "3.4": 5, "3.4.2": 5, "3.4.4": 5, "4.0.0": 5,
        "4.2.0": 5, "4.3.0": 12, "4.7.0": 17, "4.8.0": 17, "7.0.0": 27, "12.0.0": 35,
        "13.0.0": 39, "14.0.0": 39,
    },
    "aarch64": {
        "3.0": 17, "3.3": 17, "3.3.1": 17, "3.4": 17, "3.4.2": 17, "3.4.4": 17, "4.0.0": 17,
        "4.2.0": 17, "4.3.0": 17, "4.5.0": 17, "4.7.0": 17, "7.0.0": 26, "11.0": 34,
        "13.0.0": 39, "14.0": 39, "14.0.0": 39,
    },
}  # fmt: skip
OLDEST = {"x86_64": 5, "aarch64": 17}
# glibc symbols manylinux 2_5 .. 2_17 forbid (they exist in newer glibc only); from 2_24 on, none.
BLACKLISTED_BEFORE_2_24 = {
    "__cxa_thread_atexit_impl", "__issignaling", "__issignalingf", "__issignalingl",
    "pthread_getattr_default_np", "pthread_setattr_default_np",
}  # fmt: skip


def platform_tag(elf: Elf) -> tuple[str, int | None, list[str]]:
    """(tag, glibc minor version it needs or None, why) for this binary."""
    why: list[str] = []
    if elf.arch is None:
        raise SystemExit(f"build_wheel: unknown ELF machine {elf.machine}")
    linux = f"linux_{elf.arch}"
    if elf.arch not in GCC_MIN_GLIBC:
        return linux, None, [f"no manylinux rules here for {elf.arch}"]
    if elf.interpreter is None or not os.path.basename(elf.interpreter).startswith("ld-linux"):
        return linux, None, [f"interpreter {elf.interpreter!r} is not glibc's ld-linux"]
    foreign = [lib for lib in elf.needed if lib not in MANYLINUX_LIBS and not lib.startswith("ld-linux")]
    if foreign:
        return linux, None, [f"needs libraries outside the manylinux set: {', '.join(foreign)}"]
    minor = OLDEST[elf.arch]
    glibc_max, gcc_max = (2, 0), None
    for lib, names in sorted(elf.versions.items()):
        for name in names:
            if lib == "libgcc_s.so.1" and name.startswith("GCC_"):
                need = GCC_MIN_GLIBC[elf.arch].get(name[4:])
                if need is None:
                    return linux, None, [f"{lib} version {name} is in no manylinux policy we know"]
                minor = max(minor, need)
                gcc_max = name
            elif m := re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", name):
                major, mnr = int(m.group(1)), int(m.group(2))
                if major != 2:
                    return linux, None, [f"{lib} version {name}: not glibc 2"]
                glibc_max = max(glibc_max, (major, mnr))
                minor = max(minor, mnr)
            elif name == "GLIBC_ABI_DT_RELR":  # glibc 2.36's DT_RELR relocations
                glibc_max = max(glibc_max, (2, 36))
                minor = max(minor, 36)
            else:
                return linux, None, [f"{lib} version {name} is in no manylinux policy"]
    why.append(f"highest glibc symbol version GLIBC_{glibc_max[0]}.{glibc_max[1]}")
    if gcc_max:
        why.append(f"highest libgcc_s version {gcc_max}")
    bad = sorted(elf.undefined & BLACKLISTED_BEFORE_2_24)
    if bad and minor < 24:
        minor = 24
        why.append(f"uses {', '.join(bad)} (forbidden before manylinux_2_24)")
    why.append("libraries: " + ", ".join(elf.needed))
    return f"manylinux_2_{minor}_{elf.arch}", minor, why


def check_requested_tag(requested: str, computed: str, minor: int | None, arch: str) -> None:
    if requested == computed:
        return
    if requested == f"linux_{arch}":
        return  # always honest for a binary of this architecture
    m = re.fullmatch(r"manylinux_2_(\d+)_" + re.escape(arch), requested)
    if m and minor is not None and int(m.group(1)) >= minor:
        return  # a newer glibc floor than needed is true, only narrower
    raise SystemExit(
        f"build_wheel: refusing --platform-tag {requested}: the binary needs {computed} "
        f"(it does not meet the requested tag)"
    )


# ---------------------------------------------------------------------------------------------
# The wheel


def record_hash(data_or_digest: bytes, digest: bool = False) -> str:
    d = data_or_digest if digest else hashlib.sha256(data_or_digest).digest()
    return "sha256=" + base64.urlsafe_b64encode(d).rstrip(b"=").decode("ascii")


def zip_date() -> tuple[int, int, int, int, int, int]:
    # Reproducible: SOURCE_DATE_EPOCH if set, else a fixed date (zip cannot say before 1980).
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315662400"))  # 1980-01-02
    return time.gmtime(max(epoch, 315662400))[:6]


class WheelWriter:
    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records: list[tuple[str, str, str]] = []
        self.date = zip_date()

    def _info(self, arcname: str, mode: int) -> zipfile.ZipInfo:
        zi = zipfile.ZipInfo(arcname, date_time=self.date)
        zi.create_system = 3  # Unix: external_attr's high 16 bits are st_mode
        zi.external_attr = (stat.S_IFREG | mode) << 16
        zi.compress_type = zipfile.ZIP_DEFLATED
        return zi

    def add_bytes(self, arcname: str, data: bytes, mode: int = 0o644) -> None:
        self.zip.writestr(self._info(arcname, mode), data)
        self.records.append((arcname, record_hash(data), str(len(data))))

    def add_file(self, arcname: str, src: Path, mode: int) -> None:
        h, size = hashlib.sha256(), 0
        with open(src, "rb") as f, self.zip.open(
            self._info(arcname, mode), "w", force_zip64=src.stat().st_size > 0x7FFF0000
        ) as out:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
                out.write(chunk)
        self.records.append((arcname, record_hash(h.digest(), digest=True), str(size)))

    def close(self, record_name: str) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows(self.records)
        w.writerow((record_name, "", ""))  # RECORD cannot hash itself
        self.zip.writestr(self._info(record_name, 0o644), buf.getvalue().encode("utf-8"))
        self.zip.close()


def metadata_text(version: str) -> str:
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    headers = [
        ("Metadata-Version", "2.1"),
        ("Name", DIST_NAME),
        ("Version", version),
        ("Summary", SUMMARY),
        ("License", LICENSE),
        ("Requires-Python", REQUIRES_PYTHON),
        ("Classifier", "Operating System :: POSIX :: Linux"),
        ("Classifier", "Programming Language :: Rust"),
        ("Classifier", "Topic :: System :: Distributed Computing"),
        ("Description-Content-Type", "text/markdown"),
    ]
    return "".join(f"{k}: {v}\n" for k, v in headers) + "\n" + readme


def verify(wheel: Path, binary_arcname: str) -> None:
    """Re-read the wheel: every file hashed as RECORD says, RECORD complete, binary executable."""
    with zipfile.ZipFile(wheel) as z:
        bad = z.testzip()
        if bad:
            raise SystemExit(f"build_wheel: corrupt entry {bad} in {wheel}")
        names = z.namelist()
        record_name = [n for n in names if n.endswith(".dist-info/RECORD")]
        assert len(record_name) == 1 and names[-1] == record_name[0], names
        rows = list(csv.reader(io.StringIO(z.read(record_name[0]).decode("utf-8"))))
        listed = {r[0] for r in rows}
        assert listed == set(names), (listed ^ set(names))
        for path, digest, size in rows:
            if path == record_name[0]:
                assert digest == "" and size == "", (path, digest, size)
                continue
            h, n = hashlib.sha256(), 0
            with z.open(path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    n += len(chunk)
            assert digest == record_hash(h.digest(), digest=True) and size == str(n), path
        mode = z.getinfo(binary_arcname).external_attr >> 16
        assert stat.S_ISREG(mode) and mode & 0o111, oct(mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", type=Path, help="a built drove executable")
    ap.add_argument("--version", help="the wheel's version (default: the workspace Cargo.toml's)")
    ap.add_argument("--cargo-toml", type=Path, default=REPO / "Cargo.toml")
    ap.add_argument("--out-dir", type=Path, default=REPO / "target" / "wheels")
    ap.add_argument(
        "--strip",
        choices=("debug", "all", "none"),
        default="debug",
        help="strip a copy of the binary: debug info only (default; keeps symbol names for "
        "backtraces), everything, or nothing",
    )
    ap.add_argument("--platform-tag", help="claim this tag instead (refused unless the binary meets it)")
    args = ap.parse_args()

    def say(msg: str) -> None:
        print(f"build_wheel: {msg}", file=sys.stderr)

    binary = args.binary.resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise SystemExit(f"build_wheel: no executable at {args.binary}")
    cargo_version = cargo_workspace_version(args.cargo_toml)
    version = args.version or pep440_version(cargo_version)
    if not PEP440.match(version):
        raise SystemExit(f"build_wheel: {version!r} is not a normalised PEP 440 version")

    with tempfile.TemporaryDirectory(prefix="drove-wheel-") as tmp:
        exe = Path(tmp) / "drove"
        tool = None
        if args.strip != "none":
            flag = "--strip-debug" if args.strip == "debug" else "--strip-all"
            if shutil.which("strip"):
                tool = ["strip", flag, "-o", str(exe), str(binary)]
            elif shutil.which("objcopy"):
                tool = ["objcopy", flag, str(binary), str(exe)]
            else:
                say("neither strip nor objcopy found: the binary goes in unstripped")
        if tool:
            subprocess.run(tool, check=True)
        else:
            shutil.copyfile(binary, exe)
        os.chmod(exe, 0o755)
        say(
            f"binary {binary}: {binary.stat().st_size / 1e6:.1f} MB, "
            f"in the wheel ({'strip ' + args.strip if tool else 'as is'}): {exe.stat().st_size / 1e6:.1f} MB"
        )

        elf = Elf(exe)
        tag, minor, why = platform_tag(elf)
        say(f"platform {tag}: " + "; ".join(why))
        if elf.arch != platform.machine():
            say(f"note: the binary is {elf.arch}, this machine {platform.machine()}")
        else:
            # Same architecture: the binary must run and be the version the wheel says.
            out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
            if out.returncode != 0 or out.stdout.split() != ["drove", cargo_version]:
                raise SystemExit(
                    f"build_wheel: `drove --version` printed {out.stdout.strip()!r} (exit "
                    f"{out.returncode}), expected 'drove {cargo_version}': wrong binary or version"
                )
            if minor is not None:
                libc = platform.libc_ver()
                if libc[0] == "glibc" and tuple(map(int, libc[1].split(".")[:2])) < (2, minor):
                    say(f"note: this machine's glibc {libc[1]} is older than the tag's 2.{minor}")
        if args.platform_tag:
            check_requested_tag(args.platform_tag, tag, minor, elf.arch)
            tag = args.platform_tag

        name = re.sub(r"[-_.]+", "_", DIST_NAME).lower()
        stem = f"{name}-{version}"
        dist_info, data = f"{stem}.dist-info", f"{stem}.data"
        binary_arcname = f"{data}/scripts/drove"
        wheel_tag = f"py3-none-{tag}"
        args.out_dir.mkdir(parents=True, exist_ok=True)
        final = args.out_dir / f"{stem}-{wheel_tag}.whl"
        partial = args.out_dir / (final.name + ".partial")

        w = WheelWriter(partial)
        for f in PACKAGE_FILES:
            w.add_bytes(f"drove_server/{f}", (HERE / "drove_server" / f).read_bytes())
        w.add_file(binary_arcname, exe, 0o755)
        w.add_bytes(f"{dist_info}/METADATA", metadata_text(version).encode("utf-8"))
        wheel_meta = (
            "Wheel-Version: 1.0\n"
            f"Generator: {GENERATOR}\n"
            "Root-Is-Purelib: false\n"
            f"Tag: {wheel_tag}\n"
        )
        w.add_bytes(f"{dist_info}/WHEEL", wheel_meta.encode("utf-8"))
        w.close(f"{dist_info}/RECORD")
        verify(partial, binary_arcname)
        os.replace(partial, final)
    say(f"wrote {final.name}: {final.stat().st_size / 1e6:.1f} MB")
    print(final)


if __name__ == "__main__":
    main()
