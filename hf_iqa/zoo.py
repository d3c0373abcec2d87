"""Model names users can type (`liqe-mix`, `qualiclip`, ...) and where each one's weights come from.

Resolution order for a name (`resolve`):
1. the converted Hub repo (safetensors + config + code), when the entry names one and it can be reached;
2. else the original checkpoint where its authors or pyiqa publish it on the Hub, fetched with `hf_hub_download`
   (so mirrors, `HF_ENDPOINT`, the HF cache and offline mode all work), checked against its pinned sha256,
   loaded with `weights_only=True`, converted once with the same converter as `hf-iqa convert`, and cached as a
   safetensors folder keyed by that hash under `$HF_IQA_CACHE` (default `$HF_HOME/hf_iqa`);
3. else a clear error saying which file to download by hand and which `hf-iqa convert` command to run.

Anything that is not a known name (a folder, a Hub id) is returned unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PYIQA_WEIGHTS = "chaofengc/IQA-PyTorch-Weights"


class ModelNotAvailableError(RuntimeError):
    """A zoo model whose weights cannot be obtained automatically here; the message says what to do."""


@dataclass(frozen=True)
class OriginalFile:
    repo_id: str
    filename: str
    sha256: str | None = None  # pinned digest; None = not pinned yet (the digest seen is logged and used as key)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    description: str
    score_range: tuple[float, float]
    weights_license: str
    source: str
    hub_repo: str | None = None
    originals: tuple[OriginalFile, ...] = ()
    convert: Callable[..., None] | None = field(default=None, compare=False, repr=False)
    manual: str | None = None  # how to get the weights by hand when they are not on the Hub
    aliases: tuple[str, ...] = ()
    higher_is_better: bool = True

    def as_dict(self) -> dict:
        return {
            "name": self.name, "family": self.family, "description": self.description,
            "score_range": list(self.score_range), "higher_is_better": self.higher_is_better,
            "weights_license": self.weights_license, "source": self.source, "hub_repo": self.hub_repo,
            "aliases": list(self.aliases),
        }  # fmt: skip


def _convert_liqe(variant: str) -> Callable[..., None]:
    def run(paths: list[Path], output_dir: Path) -> None:
        from hf_iqa.conversion.liqe import convert

        convert(paths[0], variant, output_dir, overwrite=True)

    return run


_ENTRIES: list[ZooEntry] = [
    ZooEntry(
        name="liqe-mix",
        aliases=("liqe_mix",),
        family="liqe",
        description="LIQE multitask (quality + scene + distortion, 495 prompts), trained on six IQA datasets",
        score_range=(1.0, 5.0),
        weights_license="cc-by-nc-sa-4.0 (pyiqa copy); authors' weight licence unstated",
        source="Zhang et al., CVPR 2023; weights zwx8981/LIQE (LIQE.pt), mirrored by pyiqa as liqe_mix.pt",
        hub_repo="hf-iqa/liqe-mix",
        originals=(OriginalFile(PYIQA_WEIGHTS, "liqe_mix.pt"),),
        convert=_convert_liqe("mix"),
    ),
    ZooEntry(
        name="liqe",
        aliases=("liqe-koniq", "liqe_koniq"),
        family="liqe",
        description="LIQE quality-only model (5 prompts) trained on KonIQ-10k",
        score_range=(1.0, 5.0),
        weights_license="cc-by-nc-sa-4.0 (pyiqa copy)",
        source="Zhang et al., CVPR 2023; pyiqa liqe_koniq.pt",
        hub_repo="hf-iqa/liqe-koniq",
        originals=(OriginalFile(PYIQA_WEIGHTS, "liqe_koniq.pt"),),
        convert=_convert_liqe("koniq"),
    ),
]


def _convert_qualiclip(dataset: str | None = None) -> Callable[..., None]:
    def run(paths: list[Path], output_dir: Path) -> None:
        from hf_iqa.conversion.qualiclip import convert

        if dataset is None:
            convert(paths[0], output_dir, overwrite=True)
        else:  # the prompt-learner file + the base QualiCLIP.pth
            convert(paths[1], output_dir, base_checkpoint=paths[0], dataset=dataset, overwrite=True)

    return run


_QUALICLIP_BASE = OriginalFile(PYIQA_WEIGHTS, "QualiCLIP.pth")
_ENTRIES.append(
    ZooEntry(
        name="qualiclip",
        family="qualiclip",
        description="QualiCLIP: opinion-unaware CLIP ResNet-50 at native resolution, 7 antonym prompt pairs",
        score_range=(0.0, 1.0),
        weights_license="cc-by-nc-4.0",
        source="Agnolucci et al., arXiv 2403.11176; miccunifi/QualiCLIP weights, mirrored by pyiqa as QualiCLIP.pth",
        hub_repo="hf-iqa/qualiclip",
        originals=(_QUALICLIP_BASE,),
        convert=_convert_qualiclip(),
    )
)
for _key, _title in (("koniq", "KonIQ-10k"), ("clive", "LIVE Challenge"), ("flive", "FLIVE"), ("spaq", "SPAQ")):
    _ENTRIES.append(
        ZooEntry(
            name="qualiclip+" if _key == "koniq" else f"qualiclip+-{_key}",
            aliases=("qualiclip+-koniq",) if _key == "koniq" else (),
            family="qualiclip",
            description=f"QualiCLIP+: QualiCLIP with prompts learned on {_title} (pyiqa)",
            score_range=(0.0, 1.0),
            weights_license="cc-by-nc-sa-4.0 (pyiqa prompts) + cc-by-nc-4.0 (QualiCLIP backbone)",
            source=f"pyiqa QualiCLIP+_{_key}.pth on top of QualiCLIP.pth",
            hub_repo=f"hf-iqa/qualiclip-plus-{_key}",
            originals=(_QUALICLIP_BASE, OriginalFile(PYIQA_WEIGHTS, f"QualiCLIP+_{_key}.pth")),
            convert=_convert_qualiclip(_key),
        )
    )
_ENTRIES.append(
    ZooEntry(
        name="uniqa",
        family="uniqa",
        description="UniQA: CLIP pre-trained for quality and aesthetics; zero-shot 5-level heads",
        score_range=(0.2, 1.0),
        weights_license="cc-by-nc-sa-4.0 (repository licence)",
        source="Zhou et al., arXiv 2406.01069; zht8506/UniQA (UniQA_weight.pt)",
        hub_repo="hf-iqa/uniqa",
        manual=(
            "UniQA_weight.pt is published on Google Drive (id 1stL1EqYvjkThGDpfPWRQzvbA780FKM4n) and Baidu "
            "(1XB55QtbimMojGDIJ8h8UnA, code tnnq), see https://github.com/zht8506/UniQA."
        ),
    )
)


def _build_dog_iqa(paths: list[Path], output_dir: Path) -> None:
    """The default Dog-IQA config (sub-model ids, prompt, SAM2 settings) for package users; `import hf_iqa` provides
    the classes. (`DogIqaModel.save_pretrained` writes the full remote-code folder once the sub-models are loaded.)"""
    from hf_iqa.models.dog_iqa import DogIqaConfig, DogIqaImageProcessor

    DogIqaConfig().save_pretrained(str(output_dir))
    DogIqaImageProcessor().save_pretrained(str(output_dir))


_ENTRIES.append(
    ZooEntry(
        name="dog-iqa",
        aliases=("dogiqa", "dog_iqa"),
        family="dog_iqa",
        description="Dog-IQA: training-free, SAM2 regions scored by a multimodal LLM (mPLUG-Owl3 by default)",
        score_range=(1.0, 7.5),
        weights_license="mit (method); sub-models keep their own licences",
        source="Liu et al., arXiv 2410.02505; sub-models facebook/sam2-hiera-large + mPLUG/mPLUG-Owl3-7B-240728",
        hub_repo="hf-iqa/dog-iqa",
        convert=_build_dog_iqa,
        manual="Dog-IQA has no weights of its own: its config names the SAM2 and MLLM repos it loads.",
    )
)


def register(entry: ZooEntry) -> None:
    """Add a model family's entries (model families call this at import; users may add their own)."""
    _ENTRIES[:] = [e for e in _ENTRIES if e.name != entry.name] + [entry]


def list_models() -> list[dict]:
    """Every known name with its metadata: score range, direction, licence, source."""
    return [entry.as_dict() for entry in sorted(_ENTRIES, key=lambda e: e.name)]


def get_entry(name: str) -> ZooEntry | None:
    key = name.lower()
    for entry in _ENTRIES:
        if key == entry.name or key in entry.aliases:
            return entry
    return None


def cache_root() -> Path:
    if os.environ.get("HF_IQA_CACHE"):
        return Path(os.environ["HF_IQA_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hf_iqa"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manual_instructions(entry: ZooEntry, reason: str) -> str:
    lines = [f"hf_iqa: cannot obtain the weights of {entry.name!r} automatically ({reason})."]
    if entry.manual:
        lines.append(entry.manual)
    for original in entry.originals:
        lines.append(
            f"Download {original.filename} from https://huggingface.co/{original.repo_id} by hand, or run this "
            "once on a machine with network access to fill the Hugging Face cache."
        )
    lines.append(
        f"Then convert it: hf-iqa convert {entry.family} --checkpoint <file> --output-dir <folder>, and pass "
        "that folder as the model."
    )
    return "\n".join(lines)


def _try_converted_repo(entry: ZooEntry, revision: str | None) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if not entry.hub_repo:
        return None
    try:
        return snapshot_download(entry.hub_repo, revision=revision)
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError, ValueError) as error:
        logger.info("hf_iqa: converted repo %s not available (%s); trying the original checkpoint", entry.hub_repo,
                    type(error).__name__)  # fmt: skip
        return None


def _from_original(entry: ZooEntry) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if entry.convert is None:
        raise ModelNotAvailableError(_manual_instructions(entry, "its weights are not published on the Hub"))
    if not entry.originals:  # nothing to download (config-only models): build the folder once
        return _build_once(entry, [], cache_root() / "converted" / f"{entry.name}-default")
    paths, digests = [], []
    for original in entry.originals:
        try:
            path = Path(hf_hub_download(original.repo_id, original.filename))
        except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as error:
            raise ModelNotAvailableError(
                _manual_instructions(entry, f"{original.filename}: {type(error).__name__}: {error}")
            ) from None
        digest = _sha256(path)
        if original.sha256 and digest != original.sha256:
            raise ModelNotAvailableError(
                f"hf_iqa: {path} has sha256 {digest}, expected {original.sha256}; the file is corrupt or was "
                "replaced upstream. Delete it from the Hugging Face cache and try again."
            )
        if not original.sha256:
            logger.warning("hf_iqa: %s is not pinned; its sha256 is %s", original.filename, digest)
        paths.append(path)
        digests.append(digest)
    key = hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
    return _build_once(entry, paths, cache_root() / "converted" / f"{entry.name}-{key}")


def _build_once(entry: ZooEntry, paths: list[Path], target: Path) -> str:
    """Run the entry's converter into `target` unless a finished folder is already there (atomic rename)."""
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=target.parent))
    try:
        entry.convert(paths, staging)
        if target.exists():  # another process finished first
            shutil.rmtree(staging)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return str(target)


def _looks_like_local_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything absolute, relative-marked or deeper is a local path."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve(name_or_path: str, revision: str | None = None) -> str:
    """A local folder or Hub id for `name_or_path` (see the module docstring for the order)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    entry = get_entry(name_or_path)
    if entry is None:
        if _looks_like_local_path(name_or_path):
            raise ModelNotAvailableError(f"{name_or_path}: no such model folder")
        return name_or_path
    return _try_converted_repo(entry, revision) or _from_original(entry)


def load(name_or_path: str, revision: str | None = None, **kwargs):
    """`AutoModel.from_pretrained` for a zoo name, a folder or a Hub id (kwargs: dtype, device_map, ...)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(resolve(name_or_path, revision), **kwargs)
