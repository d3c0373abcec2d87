"""The table of model names users can type (`liqe-mix`, `qualiclip`, ...): each entry's family, score range,
licence, aliases and where its weights come from, and the errors of name resolution. `hf_iqa.zoo` resolves the
names (downloads, conversion cache) and re-exports everything here. No torch, no transformers."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PYIQA_WEIGHTS = "chaofengc/IQA-PyTorch-Weights"


class ModelNotAvailableError(RuntimeError):
    """A zoo model whose weights cannot be obtained or converted here; the message says why and what to do."""


class UnknownModelError(ModelNotAvailableError):
    """A name that is neither a zoo name, a folder nor a Hub id `org/name`; the message lists the closest names."""


@dataclass(frozen=True)
class OriginalFile:
    repo_id: str
    filename: str
    sha256: str | None = None  # pinned digest; None = not pinned yet (trust on first use, see the module doc)
    option: str = "--checkpoint"  # the `hf-iqa convert` option that takes this file


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
    convert_options: tuple[str, ...] = ()  # `hf-iqa convert <family>` options besides the files and --output-dir
    manual: str | None = None  # how to get the weights by hand when they are not on the Hub
    requires: tuple[str, ...] = ()  # Hub repos the model loads itself at load time (Dog-IQA's sub-models)
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
    def run(paths: list[Path], output_dir: Path, progress: bool | None = None) -> None:
        from hf_iqa.converters.liqe import convert

        convert(paths[0], variant, output_dir, progress=progress)

    return run


def _liqe_entry(variant: str, name: str, aliases: tuple[str, ...], description: str, licence: str, source: str):
    """A LIQE entry: the pyiqa copy `liqe_<variant>.pt`, converted with `--variant <variant>`."""
    return ZooEntry(
        name=name,
        aliases=aliases,
        family="liqe",
        description=description,
        score_range=(1.0, 5.0),
        weights_license=licence,
        source=source,
        hub_repo=f"hf-iqa/liqe-{variant}",
        originals=(OriginalFile(PYIQA_WEIGHTS, f"liqe_{variant}.pt"),),
        convert=_convert_liqe(variant),
        convert_options=("--variant", variant),
    )


_ENTRIES: list[ZooEntry] = [
    _liqe_entry(
        "mix",
        "liqe-mix",
        ("liqe_mix",),
        "LIQE multitask (quality + scene + distortion, 495 prompts), trained on six IQA datasets",
        "cc-by-nc-sa-4.0 (pyiqa copy); authors' weight licence unstated",
        "Zhang et al., CVPR 2023; weights zwx8981/LIQE (LIQE.pt), mirrored by pyiqa as liqe_mix.pt",
    ),
    _liqe_entry(
        "koniq",
        "liqe",
        ("liqe-koniq", "liqe_koniq"),
        "LIQE quality-only model (5 prompts) trained on KonIQ-10k",
        "cc-by-nc-sa-4.0 (pyiqa copy)",
        "Zhang et al., CVPR 2023; pyiqa liqe_koniq.pt",
    ),
]


def _convert_qualiclip(dataset: str | None = None) -> Callable[..., None]:
    def run(paths: list[Path], output_dir: Path, progress: bool | None = None) -> None:
        from hf_iqa.converters.qualiclip import convert

        if dataset is None:
            convert(paths[0], output_dir, progress=progress)
        else:  # the prompt-learner file + the base QualiCLIP.pth
            convert(paths[1], output_dir, base_checkpoint=paths[0], dataset=dataset, progress=progress)

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
            originals=(
                OriginalFile(PYIQA_WEIGHTS, "QualiCLIP.pth", option="--base-checkpoint"),
                OriginalFile(PYIQA_WEIGHTS, f"QualiCLIP+_{_key}.pth"),
            ),
            convert=_convert_qualiclip(_key),
            convert_options=("--dataset", _key),
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
            "(1XB55QtbimMojGDIJ8h8UnA, code tnnq), see https://github.com/zht8506/UniQA. Convert it with: "
            "hf-iqa convert uniqa --checkpoint UniQA_weight.pt --fp16-roundtrip --output-dir ./uniqa "
            "and pass ./uniqa as the model."
        ),
    )
)


def _build_dog_iqa(paths: list[Path], output_dir: Path, progress: bool | None = None) -> None:
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
        requires=("facebook/sam2-hiera-large", "mPLUG/mPLUG-Owl3-7B-240728"),
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


def known_names() -> list[str]:
    """Every name and alias the zoo accepts."""
    return sorted({name for entry in _ENTRIES for name in (entry.name, *entry.aliases)})


def _closest_names(name: str) -> list[str]:
    return difflib.get_close_matches(name.lower(), known_names(), n=3, cutoff=0.5)
