"""hf_iqa.data: every loader on a tiny synthetic replica of its owners' layout and meta-file format."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

datasets = pytest.importorskip("datasets", reason="hf_iqa.data needs the [data] extra (pip install 'hf-iqa[data]')")
try:
    import openpyxl
except ImportError:  # the [data] extra installs it; without it only the .xlsx datasets (SPAQ, CSIQ, BID) are skipped
    openpyxl = None
needs_openpyxl = pytest.mark.skipif(
    openpyxl is None, reason="SPAQ/CSIQ/BID labels are .xlsx: needs openpyxl from the [data] extra"
)
from scipy.io import savemat  # noqa: E402

from hf_iqa import data  # noqa: E402
from hf_iqa.data import DatasetLayoutError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*the official release has.*:UserWarning")


def save_image(path: Path, seed: int, size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_xlsx(path: Path, rows: list[list], sheet_title: str = "Sheet1") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    workbook.active.title = sheet_title
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)


def mos_values(n: int, low: float, high: float, seed: int = 0) -> list[float]:
    return [round(float(v), 4) for v in np.random.default_rng(seed).uniform(low, high, n)]


# ---------------------------------------------------------------------------------------------------------------
# Replicas: each returns (root, {image_id: native mos}) for the rows the loader must return
# ---------------------------------------------------------------------------------------------------------------


def make_koniq(root: Path) -> dict[str, float]:
    sets = ["training"] * 7 + ["validation"] * 2 + ["test"] * 3
    mos = mos_values(len(sets), 3, 95)
    rows = []
    for i, (s, m) in enumerate(zip(sets, mos)):
        name = f"{1000 + i}.jpg"
        save_image(root / "1024x768" / name, i)
        rows.append([name, 0.1, 0.2, 0.3, 0.2, 0.2, 100 + i, m, 0.5, s])
    write_csv(root / "koniq10k_distributions_sets.csv", ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"], rows)  # fmt: skip
    return {str(1000 + i): m for i, m in enumerate(mos)}


def make_spaq(root: Path) -> dict[str, float]:
    mos = mos_values(10, 1, 99)
    sheet = [["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]]
    for i, m in enumerate(mos):
        save_image(root / "TestImage" / f"{i + 1:05d}.jpg", i)
        sheet.append([f"{i + 1:05d}.jpg", m, 50, 51, 52, 53, 54])
    write_xlsx(root / "Annotations" / "MOS and Image attribute scores.xlsx", sheet)
    return {f"{i + 1:05d}": m for i, m in enumerate(mos)}


def make_livec(root: Path) -> dict[str, float]:
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.bmp" for i in range(100, 110)] + ["110.JPG"]
    mos = mos_values(len(names), 5, 95)
    for i, name in enumerate(names):
        folder = root / "Images" / ("trainingImages" if name.startswith("t") else "")
        save_image(folder / name, i)
    cell = np.empty((len(names), 1), dtype=object)
    cell[:, 0] = names
    (root / "Data").mkdir(parents=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array(mos)[None]})
    savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.full((1, len(names)), 15.0)})
    return {Path(n).stem: m for n, m in zip(names[7:], mos[7:])}


def make_kadid(root: Path) -> dict[str, float]:
    rows, expected = [], {}
    mos = iter(mos_values(18, 1, 5))
    for ref in range(1, 4):
        save_image(root / "images" / f"I{ref:02d}.png", 100 + ref)
        for kind in (1, 2):
            for level in (1, 2, 3):
                name = f"I{ref:02d}_{kind:02d}_{level:02d}.png"
                save_image(root / "images" / name, ref * 10 + kind + level)
                m = next(mos)
                rows.append([name, f"I{ref:02d}.png", m, 0.25])
                expected[Path(name).stem] = m
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return expected


def make_agiqa(root: Path) -> dict[str, float]:
    header = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"]
    mos = mos_values(8, 0.5, 4.5)
    rows = []
    for i, m in enumerate(mos):
        name = f"midjourney_normal_{i:03d}.jpg"
        save_image(root / "AGIQA-3K" / name, i)
        rows.append([name, f"a photo of thing {i}", "red", "big", "baroque", m, 0.3, 3.0, 0.2])
    write_csv(root / "data.csv", header, rows)
    return {f"midjourney_normal_{i:03d}": m for i, m in enumerate(mos)}


CSIQ_TAGS = {"noise": "AWGN", "jpeg": "JPEG", "jpeg 2000": "jpeg2000", "blur": "BLUR"}
CSIQ_FOLDERS = {"noise": "awgn", "jpeg": "jpeg", "jpeg 2000": "jpeg2000", "blur": "blur"}


def make_csiq(root: Path) -> dict[str, float]:
    sheet = [["CSIQ DMOS scores"], [], ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]]
    expected = {}
    mos = iter(mos_values(16, 0, 1))
    for ref in ("1600", "sunset_sparrow"):
        save_image(root / "src_imgs" / f"{ref}.png", len(ref))
        for index, kind in enumerate(CSIQ_TAGS, start=1):
            for level in (1, 2):
                file_name = f"{ref}.{CSIQ_TAGS[kind]}.{level}.png"
                save_image(root / "dst_imgs" / CSIQ_FOLDERS[kind] / file_name, index * 7 + level)
                m = next(mos)
                sheet.append([int(ref) if ref.isdigit() else ref, index, kind, level, 0.05, m])
                expected[f"{ref}.{CSIQ_FOLDERS[kind]}.{level}"] = m
    write_xlsx(root / "csiq.DMOS.xlsx", sheet, sheet_title="all_by_image")
    return expected


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def make_live(root: Path) -> dict[str, float]:
    save_image(root / "refimgs" / "bikes.bmp", 1)
    save_image(root / "refimgs" / "parrots.bmp", 2)
    template = (root / "refimgs" / "bikes.bmp").read_bytes()
    dmos = mos_values(982, 10, 100)
    orgs = np.zeros(982)
    orgs[[0, 300, 981]] = 1  # reference copies inside the distortion folders
    names = np.empty((1, 982), dtype=object)
    expected, entry = {}, 0
    for folder, count in LIVE_FOLDERS:
        (root / folder).mkdir()
        for number in range(1, count + 1):
            (root / folder / f"img{number}.bmp").write_bytes(template)
            names[0, entry] = "bikes.bmp" if entry % 2 else "parrots.bmp"
            if not orgs[entry]:
                expected[f"{folder}/img{number}"] = dmos[entry]
            entry += 1
    savemat(root / "dmos_realigned.mat", {"dmos_new": np.array(dmos)[None], "dmos_std": np.ones((1, 982)), "orgs": orgs[None]})  # fmt: skip
    savemat(root / "refnames_all.mat", {"refnames_all": names})
    return expected


def make_tid2013(root: Path) -> dict[str, float]:
    lines, stds, expected = [], [], {}
    mos = iter(mos_values(12, 0.5, 8.5))
    for ref in (1, 2):
        save_image(root / "reference_images" / f"I{ref:02d}.BMP", ref)
        for kind in (1, 2, 3):
            for level in (1, 2):
                name = f"i{ref:02d}_{kind:02d}_{level}.bmp"
                save_image(root / "distorted_images" / name, ref * 10 + kind * 3 + level)
                m = next(mos)
                lines.append(f"{m} {name}")
                stds.append("0.1")
                expected[name[:-4]] = m
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    (root / "mos_std.txt").write_text("\n".join(stds) + "\n")
    return expected


def make_bid(root: Path) -> dict[str, float]:
    header = ["Imagem"] + [f"Observador {k}" for k in range(1, 21)] + ["Média"]
    sheet, expected = [header], {}
    for i, m in enumerate(mos_values(9, 0.3, 4.8)):
        number = 190 + i
        save_image(root / "ImageDatabase" / f"DatabaseImage{number:04d}.JPG", i)
        sheet.append([number] + [3] * 20 + [m])
        expected[f"DatabaseImage{number:04d}"] = m
    write_xlsx(root / "DatabaseGrades.xlsx", sheet, sheet_title="Plan1")
    return expected


def make_pipal(root: Path) -> dict[str, float]:
    expected = {}
    elo = iter(mos_values(12, 1300, 1700))
    for ref in ("A0001", "A0002", "A0003"):
        save_image(root / "Train_Ref" / f"{ref}.bmp", int(ref[1:]))
        lines = []
        for kind in ("00", "01"):
            for index in ("00", "01"):
                name = f"{ref}_{kind}_{index}.bmp"
                save_image(root / "Train_Dis" / name, int(ref[1:]) * 5 + int(kind) * 2 + int(index))
                score = next(elo)
                lines.append(f"{name},{score}")
                expected[name[:-4]] = score
        (root / "Train_Label").mkdir(exist_ok=True)
        (root / "Train_Label" / f"{ref}.txt").write_text("\n".join(lines) + "\n")
    return expected


def make_flive(root: Path) -> dict[str, float]:
    mos = mos_values(10, 20, 90)
    rows = []
    for i, m in enumerate(mos):
        name = f"voc_emotic_ava/img_{i}.jpg" if i % 2 else f"AVA__{i}.jpg"
        save_image(root / "database" / name, i)
        rows.append([name, m, 500, 400, "True" if i >= 8 else "False"])
    write_csv(root / "labels_image.csv", ["name", "mos", "width", "height", "is_valid"], rows)
    return {str(Path(r[0]).with_suffix("").as_posix()): r[1] for r in rows}


def make_ava(root: Path) -> dict[str, float]:
    lines, expected = [], {}
    rng = np.random.default_rng(3)
    for i in range(10):
        image_id = str(953600 + i)
        save_image(root / "images" / f"{image_id}.jpg", i)
        votes = rng.integers(0, 30, 10)
        lines.append(" ".join(map(str, [i + 1, image_id, *votes, 21, 0, 1396])))
        expected[image_id] = float((votes * np.arange(1, 11)).sum() / votes.sum())
    (root / "AVA.txt").write_text("\n".join(lines) + "\n")
    (root / "aesthetics_image_lists").mkdir()
    (root / "aesthetics_image_lists" / "generic_ls_train.jpgl").write_text(
        "\n".join(str(953600 + i) for i in range(7))
    )
    (root / "aesthetics_image_lists" / "generic_test.jpgl").write_text(
        "\n".join(str(953600 + i) for i in range(7, 10))
    )
    return expected


REPLICAS = {
    "koniq10k": make_koniq,
    "spaq": make_spaq,
    "livec": make_livec,
    "kadid10k": make_kadid,
    "agiqa3k": make_agiqa,
    "csiq": make_csiq,
    "live": make_live,
    "tid2013": make_tid2013,
    "bid": make_bid,
    "pipal": make_pipal,
    "flive": make_flive,
    "ava": make_ava,
}
FR_DATASETS = {"kadid10k", "csiq", "live", "tid2013", "pipal"}


def reference_paths(dataset) -> list[str]:
    return [r["path"] for r in dataset.cast_column("reference", datasets.Image(decode=False))["reference"]]


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf_cache")


def test_registry_covers_every_benchmark():
    keys = {entry["key"] for entry in data.list_datasets()}
    assert keys == set(REPLICAS)
    for entry in data.list_datasets():
        assert entry["higher_is_better"] in (True, False) and entry["layout"] and entry["split_schemes"]
    assert data.get_dataset_info("csiq").higher_is_better is False
    assert data.get_dataset_info("clive").key == "livec"  # alias
    # the official evaluations (pyiqa, LIQE, QualiCLIP, UniQA, Dog-IQA) read stored pixels: PIL + convert("RGB")
    assert [entry["key"] for entry in data.list_datasets() if entry["exif_transpose"] is not False] == []
    with pytest.raises(KeyError, match="unknown dataset"):
        data.get_dataset_info("imagenet")


XLSX_DATASETS = {"spaq", "csiq", "bid"}


@pytest.mark.parametrize(
    "key", [pytest.param(k, marks=needs_openpyxl) if k in XLSX_DATASETS else k for k in sorted(REPLICAS)]
)
def test_loader_reads_owner_layout(key, tmp_path, cache):
    parent = tmp_path / "data"
    root = parent / data.get_dataset_info(key).folder_names[0]
    root.mkdir(parents=True)
    expected = REPLICAS[key](root)

    # through the registry, from the parent folder of several datasets
    full = data.load_benchmark(key, parent, split="all", cache_dir=cache)
    assert isinstance(full, datasets.Dataset)
    assert len(full) == len(expected)
    assert full.features["image"] == datasets.Image()
    assert full.features["mos"] == datasets.Value("float32")
    assert full.features["image_id"] == datasets.Value("string")
    got = dict(zip(full["image_id"], full["mos"]))
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6)
    first = full[0]
    assert isinstance(first["image"], PILImage.Image) and first["image"].size[0] > 0
    if key in FR_DATASETS:
        assert isinstance(first["reference"], PILImage.Image)
        assert "distortion_type" in full.features

    meta = data.dataset_metadata(full)
    info = data.get_dataset_info(key)
    assert meta["key"] == key and meta["higher_is_better"] == info.higher_is_better
    assert meta["exif_transpose"] is False  # what a runner passes to hf_iqa.io.load_image

    # default splits: official where the owners publish one, otherwise seeded random (reference-disjoint for FR)
    splits = data.load_benchmark(key, root, cache_dir=cache)
    assert isinstance(splits, datasets.DatasetDict)
    assert "train" in splits and "test" in splits
    ids = [set(part["image_id"]) for part in splits.values()]
    assert sum(map(len, ids)) == len(expected) and set.union(*ids) == set(expected)
    if key in FR_DATASETS:
        references = [set(reference_paths(part)) for part in splits.values()]
        assert not references[0] & references[-1], "random FR splits must be reference-disjoint"


def test_koniq_official_split_and_liqe_splits(tmp_path, cache):
    root = tmp_path / "koniq10k"
    expected = make_koniq(root)
    splits = data.load_koniq10k(root, cache_dir=cache)
    assert {name: len(part) for name, part in splits.items()} == {"train": 7, "validation": 2, "test": 3}
    assert splits["test"]["image_id"] == ["1009", "1010", "1011"]
    assert splits["train"].features["rating_distribution"].length == 5

    # LIQE's split files (shipped in its repository): path, score, distortion, three scenes
    split_dir = tmp_path / "LIQE" / "IQA_Database" / "koniq-10k" / "splits2" / "1"
    split_dir.mkdir(parents=True)
    ids = sorted(expected)
    for name, part in (("train", ids[:8]), ("val", ids[8:9]), ("test", ids[9:])):
        lines = [f"1024x768/{i}.jpg\t3.2\trealistic blur\tanimal\tnight\tinvalid" for i in part]
        (split_dir / f"koniq10k_{name}_clip.txt").write_text("\n".join(lines) + "\n")
    liqe = data.load_koniq10k(root, split_scheme="liqe", split_dir=tmp_path / "LIQE", cache_dir=cache)
    assert [len(liqe[s]) for s in ("train", "validation", "test")] == [8, 1, 3]
    row = liqe["test"][0]
    assert row["liqe_distortion"] == "realistic blur"
    assert liqe["test"].features["distortion_label"].int2str(row["distortion_label"]) == "blur"
    assert row["scene_labels"] == [1, 0, 0, 0, 0, 1, 0, 0, 0]
    assert row["mos"] == pytest.approx(expected[row["image_id"]], rel=1e-6)  # native label, not LIQE's copy

    (split_dir / "koniq10k_test_clip.txt").write_text("1024x768/999.jpg\t3.2\tblur\tanimal\tinvalid\tinvalid\n")
    with pytest.raises(DatasetLayoutError, match="999.jpg"):
        data.load_koniq10k(root, split_scheme="liqe", split_dir=tmp_path / "LIQE", cache_dir=cache)


def test_koniq_scores_file_uses_1_to_5_scale(tmp_path, cache):
    root = tmp_path / "koniq"
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
    rows = []
    for i in range(10):
        save_image(root / "512x384" / f"{i}.jpg", i)
        rows.append([f"{i}.jpg", 0.2, 0.2, 0.2, 0.2, 0.2, 120, 1 + i * 0.4, 0.6, 10 + i * 8])
    write_csv(root / "koniq10k_scores_and_distributions.csv", header, rows)
    splits = data.load_koniq10k(root, resolution="512x384", cache_dir=cache)  # no official split here -> random
    assert sum(len(s) for s in splits.values()) == 10
    full = data.load_koniq10k(root, "all", resolution="512x384", label="MOS_zscore", cache_dir=cache)
    assert data.dataset_metadata(full)["mos_range"] == [0.0, 100.0]
    assert sorted(full["mos"])[-1] == pytest.approx(82.0)
    assert data.dataset_metadata(data.load_koniq10k(root, "all", resolution="512x384", cache_dir=cache))["mos_range"] == [1.0, 5.0]  # fmt: skip
    with pytest.raises(DatasetLayoutError, match="1024x768"):
        data.load_koniq10k(root, cache_dir=cache)  # the default resolution is absent


def test_random_splits_are_seeded(tmp_path, cache):
    root = tmp_path / "kadid"
    make_kadid(root)
    first = data.load_kadid10k(root, "test", split_index=1, cache_dir=cache)["image_id"]
    again = data.load_kadid10k(root, "test", split_index=1, cache_dir=cache)["image_id"]
    assert first == again
    others = {tuple(data.load_kadid10k(root, "test", split_index=k, cache_dir=cache)["image_id"]) for k in range(2, 6)}
    assert any(set(other) != set(first) for other in others)
    custom = data.load_kadid10k(root, ratios=(0.5, 0.0, 0.5), cache_dir=cache)
    assert set(custom) == {"train", "test"}


def test_split_file_scheme(tmp_path, cache):
    root = tmp_path / "tid"
    expected = make_tid2013(root)
    ids = sorted(expected)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ids[:8], "test": ids[8:]}))
    splits = data.load_tid2013(root, split_scheme="file", split_file=split_file, cache_dir=cache)
    assert sorted(splits["test"]["image_id"]) == ids[8:]
    with pytest.raises(ValueError, match="supports split_scheme"):
        data.load_tid2013(root, split_scheme="official", cache_dir=cache)


class _GradeColumn:
    """A made-up label column: `good` / `bad` -> `grade` (0/1), to use split files outside LIQE's."""

    names = ("grade",)

    def features(self):
        return {"grade": datasets.ClassLabel(names=["good", "bad"])}

    def decode(self, fields):
        if fields[0] not in ("good", "bad"):
            raise ValueError(f"unknown grade {fields[0]!r}")
        return {"grade": ["good", "bad"].index(fields[0])}


def test_published_split_files_work_for_any_dataset(tmp_path):
    files = data.SplitFiles(
        scheme="paper", source="Paper", locations=("splits",), labels=_GradeColumn(),
        file_names=(("train", "tr.tsv"), ("test", "te.tsv")),
    )  # fmt: skip
    info = data.BenchmarkInfo("toy", "Toy", "NR", (0.0, 1.0), True, "mos", None, "<root>", "", split_files=files)
    assert info.split_schemes == ("random", "paper", "file")
    assert info.as_dict()["split_files"] == {"scheme": "paper", "source": "Paper", "files": ["tr.tsv", "te.tsv"]}
    rows = [{"image_id": str(i), "_path": f"img/{i}.png", "_group": str(i)} for i in range(4)]
    folder = tmp_path / "splits" / "3"
    folder.mkdir(parents=True)
    (folder / "tr.tsv").write_text("img/0.png\t0.1\tgood\nIMG/1.png\t0.2\tbad\n")
    (folder / "te.tsv").write_text("img/3.png\t0.4\tbad\n")
    splits = data.assign_splits(info, rows, "paper", split_index=3, split_dir=tmp_path)
    assert [[r["image_id"] for r in part] for part in splits.values()] == [["0", "1"], ["3"]]
    assert [r["grade"] for r in splits["train"]] == [0, 1]
    (folder / "te.tsv").write_text("img/3.png\t0.4\tugly\n")
    with pytest.raises(DatasetLayoutError, match="te.tsv line 1: unknown grade 'ugly'"):
        data.assign_splits(info, rows, "paper", split_index=3, split_dir=tmp_path)
    with pytest.raises(DatasetLayoutError, match="Paper split 2 not found"):
        data.assign_splits(info, rows, "paper", split_index=2, split_dir=tmp_path)


def test_label_vocabulary_matches_the_liqe_config_and_loads_no_model():
    """hf_iqa.labels keeps its own copy of LIQE's lists so that loaders import no model; the copies must agree."""
    from hf_iqa.labels import LIQE_DISTORTIONS, LIQE_FINE_TO_COARSE, LIQE_SCENES
    from hf_iqa.models.liqe.configuration_liqe import DISTORTIONS, SCENES

    assert (LIQE_SCENES, LIQE_DISTORTIONS) == (tuple(SCENES), tuple(DISTORTIONS))
    assert set(LIQE_FINE_TO_COARSE.values()) == set(LIQE_DISTORTIONS)
    code = "import sys, hf_iqa.data, hf_iqa.labels; print(sorted(m for m in sys.modules if m.startswith('hf_iqa.models')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_folder_loader_csv_and_json(tmp_path, cache):
    root = tmp_path / "mine"
    rows = []
    for i in range(6):
        save_image(root / "pics" / f"p{i}.png", i)
        rows.append([f"pics/p{i}.png", 10 * i + 5, "train" if i < 4 else "test", f"cam{i % 2}", i * 0.5])
    write_csv(root / "scores.csv", ["file_name", "score", "split", "camera", "iso"], rows)
    splits = data.load_folder(root, cache_dir=cache)
    assert [len(splits["train"]), len(splits["test"])] == [4, 2]
    assert splits["train"].features["camera"] == datasets.Value("string")
    assert splits["train"].features["iso"] == datasets.Value("float32")
    assert data.dataset_metadata(splits)["mos_range"] == [5.0, 55.0]  # observed range by default
    assert data.dataset_metadata(splits)["exif_transpose"] is True  # your own photos: as a viewer shows them

    (root / "scores.json").write_text(json.dumps({f"pics/p{i}.png": i for i in range(6)}))
    full = data.load_benchmark("folder", root, "all", scores_file="scores.json", mos_range=(0, 10), cache_dir=cache)
    assert full["mos"] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(DatasetLayoutError, match="cannot tell the image and score columns"):
        write_csv(root / "odd.csv", ["a", "b"], [[1, 2]])
        data.load_folder(root, scores_file="odd.csv", cache_dir=cache)


@needs_openpyxl
def test_normalize_mos_flips_lower_is_better(tmp_path, cache):
    root = tmp_path / "csiq"
    expected = make_csiq(root)
    full = data.load_csiq(root, "all", cache_dir=cache)
    normalized = data.normalize_mos(full)
    dmos = np.array(normalized["mos"], dtype=np.float64)
    np.testing.assert_allclose(normalized["mos_normalized"], 1.0 - dmos, atol=1e-6)  # DMOS in [0, 1] -> 1 - DMOS
    assert np.array_equal(full["mos"], normalized["mos"])  # native labels untouched
    assert len(expected) == len(full)
    np.testing.assert_allclose(data.normalize_scores([1, 5, 3], (1, 5), True, to=(0, 100)), [0, 100, 50])

    pipal_root = tmp_path / "pipal"
    make_pipal(pipal_root)
    pipal = data.load_pipal(pipal_root, "all", cache_dir=cache)
    with pytest.raises(ValueError, match="no fixed label range"):
        data.normalize_mos(pipal)
    observed = data.normalize_mos(pipal, mos_range="observed")
    assert min(observed["mos_normalized"]) == pytest.approx(0) and max(observed["mos_normalized"]) == pytest.approx(1)


def test_errors_name_what_was_expected_where(tmp_path, cache):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        data.load_koniq10k(tmp_path / "nowhere", cache_dir=cache)

    root = tmp_path / "kadid"
    make_kadid(root)
    (root / "dmos.csv").rename(root / "scores.csv")
    with pytest.raises(DatasetLayoutError, match=r"label file not found; looked for .*dmos\.csv") as error:
        data.load_kadid10k(root, cache_dir=cache)
    assert "Expected layout" in str(error.value)

    write_csv(root / "dmos.csv", ["dist_img", "ref", "dmos"], [["I01_01_01.png", "I01.png", 3.0]])
    with pytest.raises(DatasetLayoutError, match=r"malformed: columns \['ref_img', 'var'\] are missing"):
        data.load_kadid10k(root, cache_dir=cache)

    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], [["I01_01_01.png", "I01.png", "good", 0.1]])
    with pytest.raises(DatasetLayoutError, match="line 2: expected a number, got 'good'"):
        data.load_kadid10k(root, cache_dir=cache)

    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], [["I09_01_01.png", "I09.png", 3.0, 0.1]])
    with pytest.raises(DatasetLayoutError, match=r"1 of 1 images listed in the meta file are missing.*I09_01_01"):
        data.load_kadid10k(root, cache_dir=cache)

    live = tmp_path / "live"
    live.mkdir()
    savemat(live / "refnames_all.mat", {"refnames_all": np.array([["a.bmp"]], dtype=object)})
    savemat(live / "dmos_realigned.mat", {"dmos_new": np.ones((1, 5)), "dmos_std": np.ones((1, 5)), "orgs": np.zeros((1, 5))})  # fmt: skip
    with pytest.raises(DatasetLayoutError, match="5 DMOS entries, expected 982"):
        data.load_live(live, cache_dir=cache)


@needs_openpyxl
def test_malformed_spreadsheets_are_reported(tmp_path, cache):
    (tmp_path / "csiq").mkdir()
    write_xlsx(tmp_path / "csiq" / "csiq.DMOS.xlsx", [["image", "dmos"], ["1600", 0.1]])
    with pytest.raises(DatasetLayoutError, match="no sheet has a header row with columns"):
        data.load_csiq(tmp_path / "csiq", cache_dir=cache)
    (tmp_path / "csiq" / "csiq.DMOS.xlsx").write_text("not a workbook")
    with pytest.raises(DatasetLayoutError, match="not a readable .xlsx workbook"):
        data.load_csiq(tmp_path / "csiq", cache_dir=cache)


def test_missing_images_can_be_skipped_with_a_warning(tmp_path, cache):
    root = tmp_path / "ava"
    expected = make_ava(root)
    (root / "images" / "953600.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="missing_images='skip'"):
        data.load_ava(root, cache_dir=cache)
    with pytest.warns(UserWarning, match="skipping them"):
        splits = data.load_ava(root, missing_images="skip", cache_dir=cache)
    assert len(splits["train"]) + len(splits["test"]) == len(expected) - 1


def test_image_count_mismatch_warns(tmp_path, cache):
    root = tmp_path / "livec"
    make_livec(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data.load_livec(root, "all", cache_dir=cache)
    assert any("the official release has 1162" in str(w.message) for w in caught)


def test_cache_follows_meta_file_content(tmp_path, cache):
    root = tmp_path / "agiqa"
    make_agiqa(root)
    first = data.load_agiqa3k(root, "all", cache_dir=cache)
    assert data.load_agiqa3k(root, "all", cache_dir=cache)._fingerprint == first._fingerprint
    text = (root / "data.csv").read_text().splitlines()
    fields = text[1].split(",")
    fields[5] = "4.9"
    (root / "data.csv").write_text("\n".join([text[0], ",".join(fields), *text[2:]]) + "\n")
    assert data.load_agiqa3k(root, "all", cache_dir=cache)["mos"][0] == pytest.approx(4.9)


def test_import_without_datasets_says_which_extra():
    code = "import sys; sys.modules['datasets'] = None\ntry:\n    import hf_iqa.data\nexcept ImportError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "pip install 'hf-iqa[data]'" in out
