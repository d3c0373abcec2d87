"""The hf_iqa web demo as a Hugging Face Space (`sdk: gradio`, `app_file: app.py`); locally: `python app.py`.

The Space needs `hf-iqa[demo]` in its requirements.txt. Models come from `HF_IQA_DEMO_MODELS` (comma-separated zoo
names or folders), default LIQE-mix; they are converted from the original weights on first use and cached.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from hf_iqa.demo import DEFAULT_MODELS, launch  # noqa: E402

if __name__ == "__main__":
    models = [m.strip() for m in os.environ.get("HF_IQA_DEMO_MODELS", "").split(",") if m.strip()] or DEFAULT_MODELS
    # A Space routes traffic to 0.0.0.0:7860 (it sets GRADIO_SERVER_NAME); anywhere else this stays on 127.0.0.1.
    launch(models, host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), port=int(os.environ.get("PORT", 7860)))
