"""Convert an original LIQE checkpoint into a Hub-ready folder (same as `hf-iqa convert liqe ...`).

python conversion/convert_liqe.py --checkpoint LIQE.pt --variant mix --output-dir out/liqe-mix
python conversion/convert_liqe.py --checkpoint liqe_koniq.pt --variant koniq --output-dir out/liqe-koniq
"""

from hf_iqa.converters.liqe import main

if __name__ == "__main__":
    raise SystemExit(main())
