"""Convert QualiCLIP / QualiCLIP+ checkpoints into a Hub-ready folder (same as `hf-iqa convert qualiclip ...`).

    python conversion/convert_qualiclip.py --checkpoint qualiclip.pth --output-dir out/qualiclip
    python conversion/convert_qualiclip.py --checkpoint QualiCLIP.pth --protocol pyiqa --output-dir out/qualiclip-pyiqa
    python conversion/convert_qualiclip.py --checkpoint QualiCLIP+_spaq.pth --base-checkpoint QualiCLIP.pth \
        --output-dir out/qualiclip-plus-spaq
"""

from hf_iqa.converters.qualiclip import main

if __name__ == "__main__":
    raise SystemExit(main())
