"""Convert the released UniQA checkpoint into a Hub-ready folder (same as `hf-iqa convert uniqa ...`).

python conversion/convert_uniqa.py --checkpoint UniQA_weight.pt --output-dir out/uniqa --fp16-roundtrip
python conversion/convert_uniqa.py --checkpoint UniQA_weight.pt --quality-head net_g_koniq.pth --output-dir out/uniqa-koniq
"""

from hf_iqa.converters.uniqa import main

if __name__ == "__main__":
    raise SystemExit(main())
