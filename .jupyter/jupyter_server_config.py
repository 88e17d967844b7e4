# The project's JupyterLab settings, read when scripts/lab.sh puts this folder on JUPYTER_CONFIG_PATH
# (your own ~/.jupyter still comes first). labconfig/default_setting_overrides.json beside it
# opens a notebook's .py as a notebook (jupytext's default viewer for "python").
import warnings

from sclib.report import lab

c = get_config()  # noqa: F821 (Jupyter's config loader provides it)

# The file browser starts in notebooks/; its root is the repository, so runs/ and results/ are a click up.
c.ContentsManager.preferred_dir = "notebooks"

# One kernel in the launcher: the one papermill, nbval and the study runner use (sclib.report.lab.ensure_kernel).
c.KernelSpecManager.allowed_kernelspecs = {lab.ensure_kernel()}

# Saving a notebook of notebooks/ writes its .ipynb without outputs, as it is committed.
c.ContentsManager.pre_save_hook = lab.scrub_paired_notebook
# jupyter_server applies this config to its contents manager twice (jupytext swaps in its own),
# and the second time warns that the hook replaces itself.
warnings.filterwarnings("ignore", message=r"Overriding existing pre_save_hook \(scrub_paired_notebook\)")
