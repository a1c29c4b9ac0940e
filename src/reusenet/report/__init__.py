"""Tables (Markdown, CSV, JSON) and plots (PNG and SVG) written the same way by every command."""
from .plots import save_figure
from .tables import format_value, markdown_table, write_table

__all__ = ["format_value", "markdown_table", "save_figure", "write_table"]
