"""The Gradio page of a calibrated model: "Your images" (per-category probability before and after CFT, the
answer at the saved thresholds) and "Run report" (the before / after table, the plots, every category's gain and
selection evidence).

Offline: Gradio's analytics are off, the theme uses the system's fonts (nothing is fetched from outside), and the
page binds to 127.0.0.1 unless told otherwise. A model it cannot show gets a message on the page, not a traceback.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError

from .model import AppModel, AppModelError, category_table, load_app_model, probabilities, table_headers
from .report import read_run_report

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_HOST", "EXAMPLES_DIR", "build_app", "example_images", "launch", "offline_theme", "score_files"]

DEFAULT_HOST = "127.0.0.1"
EXAMPLES_DIR = "examples"  # images in this subfolder of the model (or Hub repo) are offered as examples
MAX_EXAMPLES = 8
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
_SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
_SYSTEM_MONO = ("ui-monospace", "Consolas", "monospace")


def _gradio():
    """Gradio, with its analytics off (imported on first use: it is the optional ``app`` extra)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError as err:
        raise ImportError("the page needs Gradio: pip install 'hf_cft[app]'") from err
    return gradio


def offline_theme():
    """Gradio's default theme with system fonts only (no font file is downloaded)."""
    return _gradio().themes.Default(font=_SYSTEM_FONTS, font_mono=_SYSTEM_MONO)


def example_images(model: AppModel) -> list[str]:
    """Local paths of up to :data:`MAX_EXAMPLES` images in the model's ``examples/`` subfolder (a folder's, or a Hub
    repo's, downloaded); [] when it has none."""
    if os.path.isdir(model.source):
        folder = os.path.join(model.source, EXAMPLES_DIR)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        return [os.path.join(folder, n) for n in names if n.lower().endswith(_IMAGE_EXTENSIONS)][:MAX_EXAMPLES]
    from huggingface_hub import hf_hub_download, list_repo_files
    from huggingface_hub.utils import HfHubHTTPError

    try:
        files = list_repo_files(model.source, revision=model.revision, token=model.token)
        names = sorted(f for f in files if f.startswith(EXAMPLES_DIR + "/") and f.lower().endswith(_IMAGE_EXTENSIONS))
        return [hf_hub_download(model.source, n, revision=model.revision, token=model.token)
                for n in names[:MAX_EXAMPLES]]
    except (OSError, ValueError, HfHubHTTPError) as err:
        logger.info("no examples from %s (%s)", model.source, err)
        return []


def score_files(model: AppModel, paths: Sequence[str] | None) -> tuple[list[str], dict, str]:
    """What the page shows for uploaded image files: the images, the per-category table and a status line."""
    several = bool(paths) and len(paths) > 1
    empty = {"headers": table_headers(model, several), "data": []}
    if not paths:
        return [], empty, "Upload one or several images."
    images, names = [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            return [], empty, f"**{os.path.basename(path)} is not an image that can be read** ({err})."
        names.append(os.path.basename(path))
    start = time.perf_counter()
    probs = probabilities(model, images)
    rows = category_table(model, probs, names if several else None)
    took = time.perf_counter() - start
    how = ("sorted by the change CFT made" if model.has_before
           else "after CFT only: the model was saved without its original rows")
    status = f"{len(images)} image(s) scored in {took:.2f} s; {how}."
    return list(paths), {"headers": table_headers(model, several), "data": rows}, status


def _warm_up(model: AppModel) -> None:
    """What the first upload would otherwise wait for: the model's first forward pass, and matplotlib's backend,
    which Gradio reads around every event (resolving it imports pyplot: about a second on 2 CPU cores)."""
    import matplotlib

    matplotlib.get_backend()
    probabilities(model, [Image.new("RGB", (32, 32))])


def _images_tab(gr, model: AppModel) -> None:
    files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                    elem_id="cft-images")
    examples = example_images(model)
    if examples:
        gr.Examples(examples=[[[path]] for path in examples], inputs=files,
                    label=f"Examples (the model's {EXAMPLES_DIR}/)")
    status = gr.Markdown("Upload one or several images.", elem_id="cft-status")
    with gr.Row():
        gallery = gr.Gallery(label="Your images", columns=4, height=240, scale=1, elem_id="cft-gallery")
        table = gr.Dataframe(value={"headers": table_headers(model), "data": []}, label="Probability per category",
                             interactive=False, show_search="search", max_height=600, scale=3,
                             elem_id="cft-table")
    files.change(lambda paths: score_files(model, paths), inputs=files, outputs=[gallery, table, status])


def _report_tab(gr, model: AppModel) -> None:
    report = read_run_report(model)
    gr.Markdown(report.summary, elem_id="cft-summary")
    if report.table:
        gr.Markdown(report.table, elem_id="cft-results")
    for path, caption in report.plots:
        gr.Image(value=path, label=caption, interactive=False, buttons=["download", "fullscreen"])
    gr.Dataframe(value={"headers": report.headers, "data": report.rows},
                 label="Per category (points; sort by a column, search by name)", interactive=False,
                 show_search="search", max_height=700, elem_id="cft-categories")


def build_app(model: str | os.PathLike | AppModel, revision: str | None = None, token: str | None = None):
    """The page (a ``gradio.Blocks``) of the calibrated model ``model`` (a folder, a Hub id, or a loaded
    :class:`~hf_cft.app.model.AppModel`); a model that cannot be shown gets a page that says why."""
    gr = _gradio()
    source = model.source if isinstance(model, AppModel) else os.fspath(model)
    error = None
    if not isinstance(model, AppModel):
        try:
            model = load_app_model(source, revision, token)
        except AppModelError as err:
            error = str(err)
    with gr.Blocks(title=f"CFT: {os.path.basename(os.path.normpath(source))}", analytics_enabled=False) as demo:
        gr.Markdown(f"# Category-wise fine-tuning: `{source}`")
        if error is not None:
            gr.Markdown(f"**This page cannot show `{source}`.**\n\n{error}", elem_id="cft-error")
            return demo
        gr.Markdown("Per category, the probability the model gave before CFT (its trained rows) and after (the "
                    "calibrated rows), for images of yours." + (" The answer is at the category's saved threshold."
                                                                  if model.thresholds is not None else ""))
        _warm_up(model)
        with gr.Tabs():
            with gr.Tab("Your images", id="images"):
                _images_tab(gr, model)
            with gr.Tab("Run report", id="report"):
                _report_tab(gr, model)
    return demo


def launch(app, host: str = DEFAULT_HOST, port: int | None = None, block: bool = True, **launch_kwargs) -> str:
    """Serve ``app`` (a page from :func:`build_app`, or what it takes) at ``host``:``port`` (default: Gradio's,
    7860 or the next free one); returns the local URL. ``block=False`` returns at once (the server runs in a
    thread; ``app.close()`` stops it). Offline: analytics off, system fonts, no share link."""
    demo = app if hasattr(app, "launch") else build_app(app)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, share=False, ssr_mode=False,
                theme=offline_theme(), quiet=not block, **launch_kwargs)
    return demo.local_url
